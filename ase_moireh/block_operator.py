"""BlockOperator: the one real-space operator type (H(R), S(R)) of the project.

Blocks <i,0|O|j,R> for an edge list (i, j, R) live in one flat value array with offsets,
so 10^5-atom operators do not become dicts of small arrays. Converters, models and
solvers all speak this type. Orbital order and spin layout: :mod:`ase_moireh.basis`.

Full-matrix layout (Bloch sums): atoms in order, each atom's rows in its block order
(for SOC: that atom's spin-up orbitals, then its spin-down orbitals).
Gauge: O(k) = sum_R O(R) exp(2 pi i k.R), k fractional; positions are not in the phase.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np
import scipy.sparse as sp
from ase.data import chemical_symbols

from ase_moireh.basis import Basis, spin_factor
from ase_moireh.files import atomic_file

FORMAT_TAG = "ase-moireh BlockOperator 1"


def _edge_key(edges: np.ndarray, natoms: int) -> np.ndarray:
    """One int64 per (i, j, R) row; |R| < 512 cells in each direction."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 5)
    r = edges[:, 2:] + 512
    if np.any((r < 0) | (r >= 1024)):
        raise ValueError("lattice vectors beyond +-511 cells are not supported")
    key = edges[:, 0] * np.int64(natoms) + edges[:, 1]
    for c in range(3):
        key = key * 1024 + r[:, c]
    return key


def sorted_edge_keys(edges: np.ndarray, natoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys of an edge table and the edge number of each (for :func:`lookup_edges`)."""
    keys = _edge_key(edges, natoms)
    order = np.argsort(keys, kind="stable")
    return keys[order], order


def lookup_edges(
    table: tuple[np.ndarray, np.ndarray], query: np.ndarray, natoms: int
) -> np.ndarray:
    """Edge numbers of the (i, j, R) rows of ``query`` in a sorted table; -1 if absent."""
    keys, order = table
    q = _edge_key(query, natoms)
    if len(keys) == 0:
        return np.full(len(q), -1)
    pos = np.clip(np.searchsorted(keys, q), 0, len(keys) - 1)
    return np.where(keys[pos] == q, order[pos], -1)


def packed_offsets(norbs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E + 1,) start of every block in the packed values (edge order), the total last;
    ``norbs``: rows of each atom's block (2x the spatial orbitals for SOC)."""
    sizes = norbs[edges[:, 0]] * norbs[edges[:, 1]]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def reversed_edges(edges: np.ndarray) -> np.ndarray:
    """(j, i, -R) for every (i, j, R) row."""
    rev = np.asarray(edges, dtype=np.int64)[:, [1, 0, 2, 3, 4]].copy()
    rev[:, 2:] *= -1
    return rev


#: numbers of a Bloch sum placed at once (bounds its temporaries, ~50 bytes each)
BLOCH_CHUNK = 2_000_000


def concatenated_ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + (np.arange(total) - first)


def chunk_slices(sizes: np.ndarray, chunk: int | None = None) -> list[slice]:
    """Consecutive slices of items of the given sizes, about ``chunk`` (default
    :data:`BLOCH_CHUNK`) in total each; an item larger than ``chunk`` stands alone."""
    chunk = chunk or BLOCH_CHUNK
    total = np.cumsum(sizes)
    if len(total) == 0:
        return []
    # a slice ends with the item at which the running total passes a multiple of chunk
    ends = np.searchsorted(total, np.arange(1, 1 + int(total[-1]) // chunk) * chunk) + 1
    cuts = [0, *sorted(set(ends.tolist()) - {0, len(sizes)}), len(sizes)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


@dataclass
class _CSRPlan:
    """Blocks sorted by (i, j); each row of atom i holds, in that order, one row of
    every block of i, so block e starts at column slot ``column[e]`` of its rows."""

    order: np.ndarray  # edges sorted by (i, j)
    start: np.ndarray  # first row of every atom
    indptr: np.ndarray  # CSR row pointer (int64)
    column: np.ndarray  # per edge: its first slot within its rows
    duplicates: bool  # some (i, j) appear with several R
    nnz: int

    @classmethod
    def build(cls, op: BlockOperator) -> _CSRPlan:
        i, j = op.edges[:, 0], op.edges[:, 1]
        order = np.lexsort((j, i))
        norbs = op.norbs
        start = np.concatenate([[0], np.cumsum(norbs)[:-1]])
        width = norbs[j[order]]  # columns each block adds to its rows
        row_width = np.bincount(i, weights=norbs[j], minlength=op.natoms).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(np.repeat(row_width, norbs))]).astype(np.int64)
        # slot of each block within its atom's rows: running width minus the atom's first
        running = np.cumsum(width) - width
        first_of_atom = np.concatenate([[0], np.cumsum(row_width)[:-1]])
        column = np.empty(op.nedges, dtype=np.int64)
        column[order] = running - first_of_atom[i[order]]
        pairs = i[order] * np.int64(op.natoms) + j[order]
        duplicates = bool(np.any(pairs[1:] == pairs[:-1]))
        return cls(order, start, indptr, column, duplicates, int(indptr[-1]))


@dataclass(eq=False)  # arrays inside: == is identity (ASE's set() compares values)
class BlockOperator:
    """Packed real-space blocks of an operator in an atomic-orbital basis.

    Treated as immutable once built: derived data (offsets, the sparse pattern) is cached.

    Attributes:
        numbers: atomic numbers (N,).
        basis: orbitals of every species present.
        edges: (E, 5) int64 rows (i, j, Rx, Ry, Rz).
        values: flat float64 (spinless) or complex128 (SOC) block data, row-major blocks.
        spinful: blocks are (2 n_i, 2 n_j) spinors, [[uu, ud], [du, dd]].
        cell: (3, 3) lattice vectors as rows, Angstrom (optional metadata).
        positions: (N, 3) Cartesian Angstrom (optional metadata).
    """

    numbers: np.ndarray
    basis: Basis
    edges: np.ndarray
    values: np.ndarray
    spinful: bool = False
    cell: np.ndarray | None = None
    positions: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 5)
        self.values = np.ascontiguousarray(self.values)
        if self.values.size != int(self.offsets[-1]):
            raise ValueError(
                f"values hold {self.values.size} numbers, blocks need {int(self.offsets[-1])}"
            )
        n = len(self.numbers)
        if len(self.edges) and (self.edges[:, :2].min() < 0 or self.edges[:, :2].max() >= n):
            raise ValueError(f"edge atom index outside 0..{n - 1}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_blocks(
        cls,
        numbers: Sequence[int],
        basis: Basis,
        edges: np.ndarray,
        blocks: Iterable[np.ndarray],
        spinful: bool = False,
        **meta,
    ) -> BlockOperator:
        """Pack a sequence of dense blocks, one per edge, in edge order."""
        flat = [np.asarray(b).ravel() for b in blocks]
        values = np.concatenate(flat) if flat else np.zeros(0)
        return cls(np.asarray(numbers), basis, np.asarray(edges), values, spinful, **meta)

    # ------------------------------------------------------------------ geometry of blocks
    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def nedges(self) -> int:
        return len(self.edges)

    @property
    def spin_factor(self) -> int:
        return spin_factor(self.spinful)

    @property
    def norbs(self) -> np.ndarray:
        """Rows of each atom's block (2x the spatial orbitals for SOC)."""
        if "norbs" not in self._cache:
            self._cache["norbs"] = self.basis.norbs(self.numbers) * self.spin_factor
        return self._cache["norbs"]

    @property
    def shapes(self) -> np.ndarray:
        """(E, 2) block shapes."""
        if "shapes" not in self._cache:
            norbs = self.norbs
            self._cache["shapes"] = np.stack(
                [norbs[self.edges[:, 0]], norbs[self.edges[:, 1]]], axis=1
            )
        return self._cache["shapes"]

    @property
    def offsets(self) -> np.ndarray:
        """(E + 1,) start of every block in :attr:`values`."""
        if "offsets" not in self._cache:
            self._cache["offsets"] = packed_offsets(self.norbs, self.edges)
        return self._cache["offsets"]

    @property
    def dimension(self) -> int:
        """Size of the full Bloch matrix."""
        return int(self.norbs.sum())

    def block(self, e: int) -> np.ndarray:
        """View of block ``e`` as a 2-D array."""
        o = self.offsets
        return self.values[o[e] : o[e + 1]].reshape(self.shapes[e])

    def blocks(self) -> Iterator[np.ndarray]:
        for e in range(self.nedges):
            yield self.block(e)

    def index(self, i: int, j: int, r: Sequence[int]) -> int:
        """Edge number of (i, j, R), or -1 if absent."""
        return int(self.find(np.array([[i, j, *r]]))[0])

    def find(self, edges: np.ndarray) -> np.ndarray:
        """Edge numbers of many (i, j, R) rows at once; -1 where absent."""
        return lookup_edges(self._sorted_keys(), edges, self.natoms)

    def reverse_edges(self) -> np.ndarray:
        """Edge number of (j, i, -R) for every edge; -1 where the partner is missing."""
        return self.find(reversed_edges(self.edges))

    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        if "keys" not in self._cache:
            self._cache["keys"] = sorted_edge_keys(self.edges, self.natoms)
        return self._cache["keys"]

    # ------------------------------------------------------------------ physics
    def hermiticity_error(self) -> float:
        """max |O_ij(R) - O_ji(-R)^dagger| over all blocks (inf if a partner is missing)."""
        rev = self.reverse_edges()
        if np.any(rev < 0):
            return float("inf")
        worst = 0.0
        for e, f in enumerate(rev):
            worst = max(worst, float(np.abs(self.block(e) - self.block(f).conj().T).max()))
        return worst

    def bloch(
        self, k: Sequence[float], overlap: BlockOperator | None = None, sigma: float = 0.0
    ) -> sp.csr_matrix:
        """O(k) = sum_R O(R) exp(2 pi i k.R) as CSR; k in fractional reciprocal coordinates.
        With a spinless ``overlap`` on the same edges: O(k) - sigma S(k), S lifted to O's
        spinor layout on the fly (the shifted matrix of shift-invert, without a spinor S).

        Written straight into CSR, a chunk of :data:`BLOCH_CHUNK` numbers at a time: the
        peak is the result plus one chunk's index arrays, and nothing per number is
        cached (a COO pattern of a 10^3-atom SOC cell is ~2 GB)."""
        plan = self._csr_plan()
        phase = np.exp(2j * np.pi * (self.edges[:, 2:] @ np.asarray(k, dtype=float)))
        if overlap is not None:
            self._check_overlap(overlap)
        index = np.int32 if plan.nnz < np.iinfo(np.int32).max else np.int64
        data = np.empty(plan.nnz, dtype=complex)
        indices = np.empty(plan.nnz, dtype=index)
        for edge, local, p, q in self.element_chunks(plan.order):
            dest = plan.indptr[plan.start[self.edges[edge, 0]] + p] + plan.column[edge] + q
            values = self.values[self.offsets[edge] + local]
            if overlap is not None and sigma != 0.0:
                values = values - sigma * overlap.lifted_values(edge, p, q, self.spinful)
            data[dest] = values * phase[edge]
            indices[dest] = plan.start[self.edges[edge, 1]] + q
        n = self.dimension
        out = sp.csr_matrix((data, indices, plan.indptr.astype(index)), shape=(n, n))
        if plan.duplicates:  # (i, j) with several R: images fold onto the same elements
            out.sum_duplicates()
        else:
            out.has_sorted_indices = True
        return out

    def element_chunks(self, edges: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, ...]]:
        """(edge, number within its block, row, column in the block) of every number of
        the given blocks (default: all, in edge order), :data:`BLOCH_CHUNK` numbers at a
        time: index arrays of a chunk, never of the whole operator (8 bytes per number
        each, gigabytes for a 10^3-atom SOC cell)."""
        edges = np.arange(self.nedges) if edges is None else np.asarray(edges, dtype=np.int64)
        for part in chunk_slices(self.shapes[edges].prod(axis=1)):
            yield self._elements(edges[part])

    def _elements(self, edges: np.ndarray) -> tuple[np.ndarray, ...]:
        shapes = self.shapes[edges]
        sizes = shapes.prod(axis=1)
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        which = np.repeat(np.arange(len(edges)), sizes)
        local = np.arange(int(sizes.sum())) - first[which]
        ncol = shapes[which, 1]
        return edges[which], local, local // ncol, local % ncol

    def lifted_values(self, edge, p, q, spinful: bool) -> np.ndarray:
        """This spinless operator's numbers at (row p, column q) of the blocks of another
        operator on the same edges: itself, or for spinor blocks O x 1_2 (zero between
        the spin halves): the one place the spinor lift of blocks is written."""
        if not spinful:
            return self.values[self.offsets[edge] + p * self.shapes[edge, 1] + q]
        ni, nj = self.shapes[edge, 0], self.shapes[edge, 1]
        same = (p // ni) == (q // nj)
        return np.where(same, self.values[self.offsets[edge] + (p % ni) * nj + q % nj], 0.0)

    def _check_overlap(self, overlap: BlockOperator) -> None:
        if overlap.spinful or not np.array_equal(overlap.edges, self.edges):
            raise ValueError("the overlap must be spinless and on the same edges")

    def _csr_plan(self) -> _CSRPlan:
        """Where every block lands in the CSR arrays (per edge and per row, cached)."""
        if "csr" not in self._cache:
            self._cache["csr"] = _CSRPlan.build(self)
        return self._cache["csr"]

    def coo_pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and edge of every stored number (k-independent, cached)."""
        if "coo" not in self._cache:
            start = np.concatenate([[0], np.cumsum(self.norbs)[:-1]])
            edge, _, p, q = self._elements(np.arange(self.nedges))
            rows, cols = start[self.edges[edge, 0]] + p, start[self.edges[edge, 1]] + q
            self._cache["coo"] = (rows, cols, edge)
        return self._cache["coo"]

    def permute_orbitals(self, perms: dict[str, np.ndarray]) -> BlockOperator:
        """New operator with every block's spatial orbitals reordered: new = old[perm].

        ``perms`` maps a species symbol to an index array over its spatial orbitals;
        for SOC the same order is used in both spin halves.
        """
        full = {}
        for sym, p in perms.items():
            p = np.asarray(p)
            full[sym] = np.concatenate([p + s * len(p) for s in range(self.spin_factor)])
        per_atom = [full[chemical_symbols[z]] for z in self.numbers]
        blocks = (
            self.block(e)[np.ix_(per_atom[i], per_atom[j])]
            for e, (i, j) in enumerate(self.edges[:, :2])
        )
        return BlockOperator.from_blocks(
            self.numbers,
            self.basis,
            self.edges,
            blocks,
            self.spinful,
            cell=self.cell,
            positions=self.positions,
        )

    def pair_labels(self) -> list[str]:
        """Element-pair label ('Mo-Te') of every edge."""
        sym = np.array([chemical_symbols[z] for z in self.numbers])
        return [
            f"{a}-{b}" for a, b in zip(sym[self.edges[:, 0]], sym[self.edges[:, 1]], strict=True)
        ]

    def mae_by_pair(self, other: BlockOperator) -> dict[str, float]:
        """Mean absolute difference per element pair, over the edges both operators hold
        (for complex blocks the modulus of the complex difference)."""
        idx = other.find(self.edges)
        if np.any(idx < 0):
            missing = int((idx < 0).sum())
            raise ValueError(f"{missing} blocks of this operator are absent from the other")
        sums: dict[str, list[float]] = {}
        for e, (f, label) in enumerate(zip(idx, self.pair_labels(), strict=True)):
            diff = np.abs(self.block(e) - other.block(int(f)))
            acc = sums.setdefault(label, [0.0, 0])
            acc[0] += float(diff.sum())
            acc[1] += diff.size
        return {label: s / n for label, (s, n) in sorted(sums.items())}

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write to HDF5 atomically (temporary file, then rename)."""
        with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
            self.write_header(f)
            f["edges"] = self.edges
            f["values"] = self.values

    def write_header(self, group: h5py.Group) -> None:
        """Everything of the file layout but ``edges`` and ``values`` (which a stream
        appends a chunk at a time: :mod:`ase_moireh.model.stream`)."""
        group.attrs["format"] = FORMAT_TAG
        group.attrs["spinful"] = self.spinful
        group.attrs["basis"] = repr(self.basis.to_dftio())
        group["numbers"] = self.numbers
        if self.cell is not None:
            group["cell"] = self.cell
        if self.positions is not None:
            group["positions"] = self.positions

    @classmethod
    def load(cls, path: str | os.PathLike, group: str = "/") -> BlockOperator:
        """Read a file of :meth:`save` (or one ``group`` of a file holding several)."""
        with h5py.File(path, "r") as f:
            if group not in f or f[group].attrs.get("format") != FORMAT_TAG:
                where = "" if group == "/" else f" (group {group!r})"
                raise ValueError(f"{path}: not a BlockOperator file{where}")
            g = f[group]
            spinful = bool(g.attrs["spinful"])
            return cls(
                numbers=g["numbers"][()],
                basis=Basis.from_dftio(g.attrs["basis"]),
                edges=g["edges"][()],
                values=g["values"][()].astype(complex if spinful else float),
                spinful=spinful,
                cell=g["cell"][()] if "cell" in g else None,
                positions=g["positions"][()] if "positions" in g else None,
            )


# --------------------------------------------------------------------------- spinors


def spinor_lift(op: BlockOperator) -> BlockOperator:
    """H (x) 1_2 of a collinear (spinless) operator, in the spinor layout (written a
    chunk at a time: no temporary of the whole spinor size)."""
    if op.spinful:
        raise ValueError("spinor_lift needs a collinear (spinless) operator")
    values = np.zeros(4 * op.values.size, dtype=complex)
    out = BlockOperator(
        op.numbers, op.basis, op.edges, values, True, cell=op.cell, positions=op.positions
    )
    for edge, local, p, q in out.element_chunks():
        out.values[out.offsets[edge] + local] = op.lifted_values(edge, p, q, True)
    return out


def matched_numbers(target: BlockOperator, source: BlockOperator):
    """Per chunk: positions in ``target.values`` and in ``source.values`` of every number
    of the source's blocks that the target has too (same edge, same block shape)."""
    found = target.find(source.edges)
    for edge, local, _, _ in source.element_chunks(np.flatnonzero(found >= 0)):
        yield target.offsets[found[edge]] + local, source.offsets[edge] + local


def add_correction(col: BlockOperator, correction: BlockOperator) -> BlockOperator:
    """H_col (x) 1_2 + dH_SO on the collinear operator's blocks (dH_SO is zero where it
    has no block: it is shorter-ranged than H). Added in place, chunk by chunk."""
    out = spinor_lift(col)
    for target, source in matched_numbers(out, correction):
        out.values[target] += correction.values[source]
    return out
