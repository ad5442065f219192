"""The native zeroth-step H0 of corpus entries (:mod:`ase_moireh.h0`), stored beside H.

Training a dH = H - H0 model needs every entry's H0; computing it costs seconds per
entry (V_NA and V_xc dominate), so it is computed once and kept in the entry's folder
as ``h0.h5`` (:data:`~ase_moireh.io.corpus.H0_NATIVE`), in the corpus H format. The
species, pseudopotentials and energy cutoff come from the entry's ``openmx_in.dat``, the
geometry from its ``hamiltonian.h5`` (OpenMX's own positions, which also place V_xc's
grid as OpenMX placed it), the spin treatment from its H. The H0's blocks must be
exactly H's (the edges OpenMX kept): a mismatch fails the entry. Resumable: an entry
that has ``h0.h5`` is skipped. The manifest is not touched.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from ase_moireh.h0.hamiltonian import H0Error, h0_builder, input_species
from ase_moireh.io.corpus import H0_NATIVE, CorpusError, is_entry, read_entry, write_hamiltonian
from ase_moireh.tightbinding import ElectronicStructure

log = logging.getLogger(__name__)

#: the corpus inputs' file naming the entry's species
INPUT = "openmx_in.dat"


def entry_h0_builder(entry: Path, data_path: str | os.PathLike | None = None):
    """The H0 builder of a corpus entry: the species and grid cutoff of its OpenMX input,
    files from ``data_path`` (an OpenMX DATA.PATH) or the bundled ones."""
    from ase_moireh.data import bundled_openmx_data_path

    basis, pseudo, cutoff = input_species(entry / INPUT)
    return h0_builder(data_path or bundled_openmx_data_path(), basis, pseudo, cutoff)


def native_h0(entry: Path, data_path: str | os.PathLike | None = None) -> float:
    """H0 of one entry into ``entry/h0.h5`` (atomic write); returns seconds
    (:func:`entry_h0_builder`)."""
    start = time.perf_counter()
    run = read_entry(entry)
    builder = entry_h0_builder(entry, data_path)
    h = run.hamiltonian
    h0 = builder.structure(run.atoms, spinful=h.spinful)
    found = h0.hamiltonian.find(h.edges)
    if (found < 0).any() or h0.hamiltonian.nedges != h.nedges:
        raise H0Error(
            f"{entry}: H0 has {h0.hamiltonian.nedges} blocks, H {h.nedges} "
            f"({int((found < 0).sum())} of H's missing): not OpenMX's edges"
        )
    stored = ElectronicStructure(run.atoms, h0.hamiltonian, None, None, h0.source, h0.extra)
    write_hamiltonian(entry / H0_NATIVE, stored)
    return time.perf_counter() - start


def native_h0s(
    corpus: str | os.PathLike,
    names: Iterable[str] | None = None,
    data_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """H0 of every entry (or ``names``) lacking ``h0.h5``, smallest cells first; returns
    (name, failure) pairs. An entry is a folder with ``hamiltonian.h5``."""
    corpus = Path(corpus)
    folders = sorted(p for p in corpus.iterdir() if is_entry(p))
    if names is not None:
        wanted = list(names)
        unknown = [n for n in wanted if not is_entry(corpus / n)]
        if unknown:
            raise CorpusError(f"{corpus}: no entries {', '.join(unknown)}")
        folders = [corpus / n for n in wanted]
    todo = sorted(
        (f for f in folders if not (f / H0_NATIVE).is_file()),
        key=lambda f: ((f / "hamiltonian.h5").stat().st_size, f.name),
    )
    failed = []
    for folder in tqdm(todo, desc="native H0", unit="entry", disable=not progress):
        try:
            seconds = native_h0(folder, data_path)
        except (ValueError, OSError) as err:
            log.error("%s: %s", folder.name, err)
            failed.append((folder.name, str(err)))
            continue
        log.info("%s: native H0 in %.1f s", folder.name, seconds)
    return failed
