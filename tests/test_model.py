"""The equivariant model: graphs, symmetry of predictions, Hermiticity, model files."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toy_models import rotated_operator, tiny_model, toy_h0

from ase_moireh.basis import atom_rotation
from ase_moireh.build import twisted_bilayer
from ase_moireh.data import bundled_model_path
from ase_moireh.model.graph import MOTE2_CUTOFF, build_graph, graph_edges
from ase_moireh.model.io import ModelBundle, ModelFileError, load_bundle, save_bundle
from ase_moireh.model.network import HamiltonianModel, ModelConfig, new_model
from ase_moireh.model.predict import predict_operators
from ase_moireh.overlap import bundled_overlap
from shared_data import converted


def bundle_of(model: HamiltonianModel) -> ModelBundle:
    return ModelBundle([model], bundled_overlap())


def predicted_blocks(model, atoms, h0=None):
    """{(i, j, R): block} predicted for ``atoms`` (the graph carrying ``h0``)."""
    data = build_graph(atoms, model.config.species, model.config.cutoff, h0=h0)
    h, _, _ = predict_operators_no_overlap(model, atoms, h0)
    return {tuple(e): h.block(k) for k, e in enumerate(h.edges)}, data


def predict_operators_no_overlap(model, atoms, h0=None):
    from ase_moireh.model.predict import predict_hamiltonian

    data = build_graph(atoms, model.config.species, model.config.cutoff, h0=h0)
    h, _ = predict_hamiltonian([model], atoms, data)
    return h, 0, 0


@pytest.mark.parametrize("case", ["bl1x1_nosoc_s00", "tw2179_nosoc"])
def test_graph_edges_are_exactly_the_openmx_blocks(case):
    s = converted(case)
    edges = graph_edges(s.atoms, MOTE2_CUTOFF)
    found = s.hamiltonian.find(edges)
    assert len(edges) == s.hamiltonian.nedges and np.all(found >= 0)


def trained_model(spinful: bool) -> HamiltonianModel:
    """A bundled (trained) network in float64; for SOC, the spinful network of the
    bundle: its dH_SO correction when SOC is made as one (the spinor lift of the
    collinear part is tested in test_soc_correction)."""
    bundle = load_bundle(bundled_model_path(spinful), dtype=torch.float64)
    network = (bundle.corrections or bundle.models)[0] if spinful else bundle.models[0]
    if spinful and not network.config.spinful:
        # a dH bundle: H0_SOC + dH (x) 1_2, spin-orbit from H0 (its symmetry:
        # test_h0_hamiltonian.py), the network the collinear one tested above
        pytest.skip("the bundled SOC model has no spinful network (dH on H0_SOC)")
    assert network.config.spinful == spinful
    return network


@pytest.mark.parametrize(
    "which",
    [
        pytest.param("untrained-tp", marks=pytest.mark.slow),
        "untrained-so2",
        "untrained-wide",
        "untrained-long-range",
        "untrained-long-range-shells",
        "untrained-h0-features",
        "untrained-norm-features",
        "untrained-norm-features-onsite",
        pytest.param("bundled", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("spinful", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("improper", [False, True])
def test_blocks_rotate_by_wigner_d(spinful, improper, which):
    """Rotate (or rotate-reflect) the structure: every block transforms as
    M_i B M_j^dagger with M the shell-wise Wigner-D (and spin-1/2 rotation), for
    untrained models with either convolution, with the long-range head (Ewald potential
    of latent charges times the exact S; also resolved by shell), reading H0
    (``h0_features``: the H0 rotated along), with the node features' norms as scalars
    (before all heads, or the on-site heads only) and for the bundled trained model, in
    float64."""
    if which == "bundled":
        model = trained_model(spinful)
    elif which == "untrained-wide":
        model = tiny_model(spinful, wide=True)
    elif which == "untrained-long-range":
        model = tiny_model(spinful, long_range=True)
    elif which == "untrained-long-range-shells":
        model = tiny_model(spinful, shells=True)
    elif which == "untrained-h0-features":
        model = tiny_model(spinful, h0_features=True)
    elif which.startswith("untrained-norm-features"):
        model = tiny_model(spinful, norms="onsite" if which.endswith("onsite") else "all")
    else:
        model = tiny_model(spinful, convolution=which.split("-")[1])
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=1)
    q = Rotation.random(random_state=7).as_matrix() * (-1 if improper else 1)
    moved = atoms.copy()
    moved.set_cell(np.asarray(atoms.cell) @ q.T, scale_atoms=False)
    moved.positions = atoms.positions @ q.T
    h0 = h0_moved = None
    if model.config.h0_features:  # H0 rotates with the structure, as any H does
        h0 = toy_h0(atoms)
        h0_moved = rotated_operator(h0, moved, q)
    before, _ = predicted_blocks(model, atoms, h0)
    after, _ = predicted_blocks(model, moved, h0_moved)
    basis = model.config.basis_obj
    sym = atoms.get_chemical_symbols()
    rot = {s: atom_rotation(basis[s], q, spinful) for s in set(sym)}
    worst = max(
        np.abs(after[key] - rot[sym[key[0]]] @ block @ rot[sym[key[1]]].conj().T).max()
        for key, block in before.items()
    )
    # float64 to rounding, both convolutions (seen: 3e-14 to 1.6e-13 eV; long range:
    # 1e-13, the k-vector set and the overlap splines being rotation-invariant)
    assert worst < 1e-10  # eV


def translated_blocks(model):
    """(blocks of a rattled (2,1) cell, blocks of the same cell moved as a whole, the cell)."""
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=2)
    base, _ = predicted_blocks(model, atoms)
    shifted = atoms.copy()
    shifted.positions += [0.3, -1.1, 0.4]  # no wrap: lattice vectors of edges unchanged
    moved, _ = predicted_blocks(model, shifted)
    return base, moved, atoms


@pytest.mark.slow
def test_translation_and_permutation_invariance():
    model = tiny_model(spinful=True)
    base, moved, atoms = translated_blocks(model)
    assert max(np.abs(moved[k] - v).max() for k, v in base.items()) < 1e-9
    perm = np.random.default_rng(3).permutation(len(atoms))
    permuted, _ = predicted_blocks(model, atoms[perm])
    for (i, j, *r), block in permuted.items():
        assert np.allclose(block, base[(perm[i], perm[j], *r)], atol=1e-9)
    assert len(permuted) == len(base)


@pytest.mark.parametrize("h0_features, shells", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("spinful", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_predictions_are_hermitian_by_construction(spinful, h0_features, shells):
    model = tiny_model(spinful, h0_features=h0_features, shells=shells)
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=4)
    h, _, _ = predict_operators_no_overlap(model, atoms, toy_h0(atoms) if h0_features else None)
    assert h.hermiticity_error() < 1e-12
    assert h.spinful == spinful


def test_h0_features_change_the_prediction_with_h0_and_are_required():
    """A model reading H0 predicts other blocks for another H0 of the same structure
    (on-site and hopping parts each act); a SOC H0 gives the same features as its
    spin-independent part; without H0 on the graph it refuses."""
    from ase_moireh.block_operator import spinor_lift

    model = tiny_model(spinful=False, h0_features=True)
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=5)
    h0 = toy_h0(atoms, seed=0)
    base, _ = predicted_blocks(model, atoms, h0)
    onsite = (h0.edges[:, 0] == h0.edges[:, 1]) & ~h0.edges[:, 2:].any(axis=1)
    for part in (onsite, ~onsite):  # change on-site blocks only, then hopping only
        other = toy_h0(atoms, seed=0)
        changed = np.zeros(len(other.values), dtype=bool)
        for e in np.flatnonzero(part):
            changed[other.offsets[e] : other.offsets[e + 1]] = True
        other.values[changed] *= 1.1
        moved, _ = predicted_blocks(model, atoms, other)
        assert max(np.abs(moved[k] - v).max() for k, v in base.items()) > 1e-3
    lifted, _ = predicted_blocks(model, atoms, spinor_lift(h0))
    assert max(np.abs(lifted[k] - v).max() for k, v in base.items()) < 1e-12
    with pytest.raises(RuntimeError, match="h0_features reads H0"):
        predicted_blocks(model, atoms)


def test_model_configs_from_before_h0_features_load_without_them(tmp_path):
    """A config written before ``h0_features`` existed reads no H0: same parameters;
    a saved model that reads H0 loads with its standardisation and predicts the same."""
    config = tiny_model(spinful=False).config
    fields = json.loads(config.to_json())
    del fields["h0_features"]
    old = ModelConfig.from_json(json.dumps(fields))
    assert not old.h0_features and not hasattr(HamiltonianModel(old), "h0_in")
    model = tiny_model(spinful=False, h0_features=True)
    save_bundle(bundle_of(model), tmp_path / "h0.pt")
    loaded = load_bundle(tmp_path / "h0.pt", dtype=torch.float64).models[0]
    atoms = twisted_bilayer(2, 1)
    h0 = toy_h0(atoms)
    a, _ = predicted_blocks(model, atoms, h0)
    b, _ = predicted_blocks(loaded, atoms, h0)
    assert max(np.abs(a[k] - v).max() for k, v in b.items()) < 1e-12


def test_long_range_predictions_are_translation_invariant():
    """The Ewald potential depends on differences of positions only: moving every atom
    changes no block (the exact S, a function of bond vectors, neither)."""
    base, moved, atoms = translated_blocks(tiny_model(spinful=False, long_range=True))
    plain, _ = predicted_blocks(tiny_model(spinful=False), atoms)
    assert max(np.abs(moved[k] - v).max() for k, v in base.items()) < 1e-9
    assert max(np.abs(plain[k] - v).max() for k, v in base.items()) > 1e-2  # the head acts


def test_long_range_overlap_from_the_graph_equals_the_computed_one():
    """Training graphs carry the exact S of every edge, prediction computes it with the
    model's attached overlap: the same blocks either way. Without either, the model
    refuses; so does a bundle without radial functions."""
    model = tiny_model(spinful=False, long_range=True)
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=3)
    bare = build_graph(atoms, ["Mo", "Te"], MOTE2_CUTOFF)
    carried = build_graph(atoms, ["Mo", "Te"], MOTE2_CUTOFF, overlap=bundled_overlap())
    with torch.no_grad():
        a, b = model(bare), model(carried)
    assert all(torch.allclose(a[k][1], b[k][1], rtol=0, atol=1e-12) for k in a)
    model.attach_overlap(None)
    with pytest.raises(RuntimeError, match="needs the exact overlap"):
        model(bare)
    with pytest.raises(ValueError, match="long-range model needs the exact overlap"):
        ModelBundle([model], None)


@pytest.mark.parametrize("spinful", [False, True])
def test_a_shell_resolved_head_with_equal_shells_is_the_plain_head(spinful, tmp_path):
    """Resolved by shell, the head adds (phi_ia + phi_jb) / 2 * S_ij[a, b]: with its
    per-shell terms at zero (as it starts) it is the plain head, with one common factor
    c on every shell it is the plain head with its factor raised by c; with
    shell-dependent terms it differs, and it survives a save and load."""
    shelled = tiny_model(spinful, shells=True)
    plain = tiny_model(spinful, long_range=True)
    plain.load_state_dict(shelled.state_dict(), strict=False)
    head = shelled.potential_head
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=5)

    def gap(a, b):
        return max(np.abs(a[k] - v).max() for k, v in b.items())

    randomised, _ = predicted_blocks(shelled, atoms)
    save_bundle(bundle_of(shelled), tmp_path / "shells.pt")
    loaded = load_bundle(tmp_path / "shells.pt", dtype=torch.float64).models[0]
    assert gap(predicted_blocks(loaded, atoms)[0], randomised) < 1e-12
    with torch.no_grad():
        head.shell_local.weight.zero_()
        head.shell_scale.fill_(0.2)
        plain.potential_head.scale.add_(0.2)
    common = predicted_blocks(shelled, atoms)[0]
    assert gap(common, predicted_blocks(plain, atoms)[0]) < 1e-12
    assert gap(randomised, common) > 1e-2
    with torch.no_grad():
        head.shell_scale.zero_()
        plain.potential_head.scale.sub_(0.2)
    assert gap(predicted_blocks(shelled, atoms)[0], predicted_blocks(plain, atoms)[0]) < 1e-12


def test_a_shell_resolved_head_adds_each_orbital_pairs_own_potential():
    """Block (i, j) gets (phi_ia + phi_jb) / 2 * S_ij[a, b]: row orbital a of atom i,
    column orbital b of atom j (a transposed weight is still Hermitian and equivariant,
    so only this checks the orientation). The difference to the same network without
    the head, on every block of a rattled twisted cell, against that formula."""
    model = tiny_model(spinful=False, shells=True)
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=8)
    data = build_graph(
        atoms, ["Mo", "Te"], MOTE2_CUTOFF, dtype=torch.float64, overlap=bundled_overlap()
    )
    with torch.no_grad():
        with_head = model(data)
        phi = model.potential(data, model.features(data)[0])
        head, model.potential_head = model.potential_head, None
        without = model(data)
        model.potential_head = head
    i, j = data.edge_index
    worst = 0.0
    for key, (edges, blocks) in with_head.items():
        s = model._spinless_overlap(key, edges, data)
        ni, nj = s.shape[1:]
        expected = 0.5 * (phi[i[edges], :ni, None] + phi[j[edges], None, :nj]) * s
        diff = (blocks - without[key][1]).reshape(-1, ni, nj)
        worst = max(worst, float((diff - expected).abs().max()))
    assert phi.shape[1] == 19 and float(phi.std(dim=1).max()) > 1e-2  # shells differ
    assert worst < 1e-12


def test_model_configs_from_before_long_range_load_without_the_head(tmp_path):
    """A config written before ``long_range`` existed means no head: same parameters,
    same predictions; a saved long-range model loads with its head and its S."""
    config = tiny_model(spinful=False).config
    fields = json.loads(config.to_json())
    del fields["long_range"], fields["long_range_local"], fields["long_range_shells"]
    old = ModelConfig.from_json(json.dumps(fields))
    assert not old.long_range and HamiltonianModel(old).potential_head is None
    model = tiny_model(spinful=False, long_range=True)
    save_bundle(bundle_of(model), tmp_path / "lr.pt")
    loaded = load_bundle(tmp_path / "lr.pt", dtype=torch.float64).models[0]
    assert loaded.overlap_source is not None
    atoms = twisted_bilayer(2, 1)
    a, _ = predicted_blocks(model, atoms)
    b, _ = predicted_blocks(loaded, atoms)
    assert max(np.abs(a[k] - v).max() for k, v in b.items()) < 1e-12


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("spinful", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_streamed_blocks_equal_the_forward_pass(spinful, h0, wide):
    """Inference streams blocks a chunk at a time and passes messages a chunk of bonds
    at a time (tiny chunks of both here), recomputing each reverse edge's blocks: the
    same numbers as the training forward pass (with the long-range head when ``wide``,
    reading H0 when ``h0``, with the norm features before all heads when ``wide``, before
    the on-site heads only otherwise)."""
    norms = "all" if wide else "onsite"
    model = tiny_model(spinful, wide=wide, long_range=wide, h0_features=h0, norms=norms)
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=6)
    h0_op = toy_h0(atoms) if h0 else None
    data = build_graph(atoms, ["Mo", "Te"], MOTE2_CUTOFF, dtype=torch.float64, h0=h0_op)
    with torch.no_grad():
        whole = model(data)
    seen = dict.fromkeys(whole, 0)
    for key, edges, blocks in model.stream_blocks(data, chunk=200_000, edge_chunk=700):
        ref_edges, ref = whole[key]
        rows = torch.searchsorted(ref_edges, edges)  # edge numbers are sorted per key
        assert torch.equal(ref_edges[rows], edges)
        assert torch.allclose(blocks, ref[rows], rtol=0, atol=1e-12)
        seen[key] += len(edges)
    assert seen == {key: len(edges) for key, (edges, _) in whole.items()}


def _multiplicities(irreps) -> dict:
    out: dict = {}
    for mul, ir in irreps:
        out[ir] = out.get(ir, 0) + mul
    return out


@pytest.mark.parametrize("wide", [False, True])
def test_wide_heads_read_at_least_as_many_features_as_their_blocks_have_parts(wide):
    """A linear head cannot output more independent parts of an irrep than it reads:
    with ``wide_heads`` every head reads at least its block's multiplicity of every
    irrep (e.g. 20 2e parts of a Te-Te block); the hidden width (multiplicity 2 here)
    falls short of it."""
    model = tiny_model(spinful=False, wide=wide)
    short = 0
    for head in model.heads.values():
        reads, needs = _multiplicities(head.irreps_in), _multiplicities(head.irreps_out)
        short += sum(reads.get(ir, 0) < mul for ir, mul in needs.items())
    assert (short == 0) == wide


@pytest.mark.slow
def test_model_file_round_trip_and_tampering(tmp_path):
    model = tiny_model(spinful=True)
    path = tmp_path / "model.pt"
    save_bundle(bundle_of(model), path)
    loaded = load_bundle(path, dtype=torch.float64)
    atoms = twisted_bilayer(2, 1)
    a, _, _ = predict_operators_no_overlap(model, atoms)
    b, _, _ = predict_operators_no_overlap(loaded.models[0], atoms)
    assert np.allclose(a.values, b.values, atol=1e-12)
    edges = graph_edges(atoms, MOTE2_CUTOFF)  # the radial functions travel with the model
    exact = bundled_overlap().operator(atoms, edges).values
    assert np.array_equal(loaded.overlap.operator(atoms, edges).values, exact)
    raw = path.read_bytes()
    caught = 0
    for offset in np.linspace(0, len(raw) - 1, 40).astype(int):  # header, weights, index
        tampered = bytearray(raw)
        tampered[offset] ^= 0xFF
        (tmp_path / "tampered.pt").write_bytes(bytes(tampered))
        try:
            changed = load_bundle(tmp_path / "tampered.pt", dtype=torch.float64)
        except ModelFileError as err:
            assert "tampered.pt" in str(err)
            caught += 1
            continue
        # a flip in zip bookkeeping may leave the content intact: then it must be identical
        c, _, _ = predict_operators_no_overlap(changed.models[0], atoms)
        assert np.array_equal(c.values, b.values)
    assert caught >= 30
    evil = tmp_path / "evil.pt"
    torch.save({"format": "ase-moireh model 2", "payload": Rotation}, evil)  # a class
    with pytest.raises(ModelFileError, match="evil.pt"):
        load_bundle(evil)
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(ModelFileError):
        load_bundle(tmp_path / "text.pt")


def test_models_without_radial_functions_and_old_files(tmp_path):
    """A basis with no radial functions (another code's orbitals) gives an H-only model
    whose S must come from somewhere else; a file with the removed learned overlap is
    refused with a reason."""
    model = tiny_model(spinful=False)
    save_bundle(ModelBundle([model], None), tmp_path / "h_only.pt")
    loaded = load_bundle(tmp_path / "h_only.pt")
    assert loaded.overlap is None
    atoms = twisted_bilayer(2, 1)
    h, s, _ = predict_operators(loaded, atoms)
    assert s is None and h.nedges > 0
    torch.save({"format": "ase-moireh model 1", "configs": []}, tmp_path / "old.pt")
    with pytest.raises(ModelFileError, match="old.pt: .* learned overlap"):
        load_bundle(tmp_path / "old.pt")


def test_model_files_from_before_so2_load_as_tensor_product_models():
    """A config written before the "convolution" field existed means full tensor products;
    new configs default to the SO(2) edge-frame convolution."""
    config = tiny_model(spinful=False).config
    fields = json.loads(config.to_json())
    del fields["convolution"]
    assert ModelConfig.from_json(json.dumps(fields)).convolution == "tp"
    assert ModelConfig(species=["Si"], basis={"Si": "2s2p1d"}, spinful=False).convolution == "so2"
    with pytest.raises(ValueError, match="unknown convolution"):
        HamiltonianModel(ModelConfig(**{**fields, "convolution": "fft"}))


def test_band_errors_near_gap_counts_only_levels_near_the_edges():
    from ase_moireh.metrics import band_errors_near_gap

    ref = np.array([[-3.0, -0.2, 0.0, 1.0, 1.1, 4.0], [-3.1, -0.5, -0.1, 1.2, 1.5, 4.0]])
    pred = ref.copy()
    pred[:, 0] += 0.5  # far from the gap: not counted
    pred[0, 2] += 0.004  # the valence-band maximum moves up by 4 meV
    pred[1, 4] -= 0.002
    out = band_errors_near_gap(ref, pred, nocc=3, window=0.3)
    # near: (0,-0.2), (0,0.0), (1,-0.1), (0,1.0), (0,1.1), (1,1.2): 6 levels
    assert out["levels"] == 6
    assert out["max_meV"] == pytest.approx(4.0)
    assert out["gap_reference_meV"] == pytest.approx(1000.0)
    assert out["gap_error_meV"] == pytest.approx(-4.0)


def test_batched_graphs_each_carry_their_own_h0():
    """Graphs batched together keep each one's H0 (``h0_start`` shifted by the values
    before it): the batch predicts what each graph alone does."""
    from torch_geometric.data import Batch

    model = tiny_model(spinful=False, h0_features=True)
    graphs = []
    for seed in (1, 2):
        atoms = twisted_bilayer(2, 1)
        atoms.rattle(0.05, seed=seed)
        graphs.append(build_graph(atoms, ["Mo", "Te"], MOTE2_CUTOFF, h0=toy_h0(atoms, seed)))
    batch = Batch.from_data_list(graphs)
    assert int(batch.h0_start[graphs[0].num_edges]) == graphs[0].h0_values.numel()
    with torch.no_grad():
        alone = [model(g) for g in graphs]
        together = model(batch)
    for key, (_, blocks) in together.items():
        expected = torch.cat([a[key][1] for a in alone])
        assert torch.allclose(blocks, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("place", ["all", "onsite"])
def test_norm_features_start_as_the_model_without_them_and_survive_a_model_file(tmp_path, place):
    """A model given NormFeatures (weights at zero) predicts what it did without them,
    so a pretrained model may take them on; once trained (random weights here) they
    change the blocks (only the on-site ones when they feed only the on-site heads),
    and a model file keeps them."""
    plain = tiny_model(spinful=False)
    config = ModelConfig(**{**asdict(plain.config), "norm_features": place})
    widened = new_model(config, torch.float64)
    missing, unexpected = widened.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("norm_features.") for k in missing) and missing
    atoms = twisted_bilayer(2, 1)
    atoms.rattle(0.05, seed=3)
    a, _ = predicted_blocks(plain.eval(), atoms)
    b, _ = predicted_blocks(widened.eval(), atoms)
    assert max(np.abs(a[k] - v).max() for k, v in b.items()) < 1e-12
    with torch.no_grad():
        widened.norm_features.mix.weight.normal_()
    c, _ = predicted_blocks(widened, atoms)
    change = {k: np.abs(a[k] - v).max() for k, v in c.items()}
    onsite = {k for k in change if k[0] == k[1] and not any(k[2:])}
    assert max(change[k] for k in onsite) > 1e-3
    hopping = max(v for k, v in change.items() if k not in onsite)
    assert (hopping < 1e-12) if place == "onsite" else (hopping > 1e-3)
    save_bundle(bundle_of(widened), tmp_path / "norms.pt")
    loaded = load_bundle(tmp_path / "norms.pt", dtype=torch.float64).models[0]
    d, _ = predicted_blocks(loaded, atoms)
    assert max(np.abs(c[k] - v).max() for k, v in d.items()) < 1e-12


def test_norm_feature_places():
    """Model files of 2026-12-07 say norm_features as a bool (True: before all heads);
    an unknown place is refused by name."""
    plain = asdict(tiny_model(spinful=False).config)
    assert ModelConfig(**{**plain, "norm_features": True}).norm_features == "all"
    assert ModelConfig(**{**plain, "norm_features": False}).norm_features == ""
    with pytest.raises(ValueError, match="norm_features='edges'"):
        ModelConfig(**{**plain, "norm_features": "edges"})
