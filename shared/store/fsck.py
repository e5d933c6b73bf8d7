"""``puller fsck``: check the store against what it promises, and with ``--repair`` take out what is broken.

The store is trusted only as far as it verifies (docs/store.md, "Consistency"): a blob only under its digest, a layer
dir only once its diff_id matched, a reference last. Disks, people and other tools break those promises anyway;
fsck finds where, in one line per problem, and ``--repair`` removes exactly what is broken so that the next
``puller pull`` of the same reference fetches and unpacks it again (pull reuses whatever is still good).

Checks, in this order, each using what the earlier ones proved:

* every blob is re-hashed, streamed (a layer blob may be gigabytes);
* every layer dir: layer.json readable, its chain_id the dir name and recomputed from parent + diff_id, the parent
  layer present and sound, diff/ present, and the recorded diff_id re-proved by decompressing the (verified)
  source blob and hashing the tar stream. The diff dir itself cannot be re-tarred byte for byte, so the record is
  what can be proved; a layer whose source blob is gone (GC keeps a container's layers, not their blobs) is
  checked without it;
* every index.json entry: its manifest (and the index it was resolved from) present, verified and parsing, the
  config present, verified, parsing and listing as many diff_ids as the manifest has layers, every layer blob
  present and verified and its tar hashing to the config's diff_id, and every layer unpacked under its chain ID;
* every hold's layers (a container's) present and sound; an unreadable hold is a problem;
* tmp/ entries (and blob temp files) of processes that are gone: litter, reported but not a problem.

Repair: corrupt blobs are deleted; broken layer dirs (and the layers on top of them) go as GC takes them, one
rename into tmp/ then removal there; references that no longer have a complete image are untagged, and the layer
dirs unpacked from a blob that is gone are taken out too, since pull would otherwise find the layer "already
exists" and never fetch the blob again. A layer a container rests on is never removed: that problem stays until
the container is removed. fsck holds the store's locks as GC does, so it never races a pull or a container
creation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.digest import Digest
from shared.errors import Kind, StrataError, not_found
from shared.image import (
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Index,
    Manifest,
    chain_ids,
    media_type_of,
)
from shared.layer import compress
from shared.store.files import pid_alive, read_json, remove_tree, write_json
from shared.store.layout import INDEX_DIGEST_ANNOTATION, REF_NAME_ANNOTATION, LayerRecord, Store
from shared.transfer.model import Document, Image

CHUNK = 1 << 20


@dataclass
class Report:
    """What a check found. Problems are one line each; litter is noted, not counted as a problem."""

    problems: list[str] = field(default_factory=list)
    litter: list[Path] = field(default_factory=list)
    partials: list[Path] = field(default_factory=list)  # interrupted downloads kept to resume: not problems
    # what --repair would remove, and why it must go
    bad_blobs: set[Digest] = field(default_factory=set)  # corrupt (hash mismatch) or unreadable
    bad_layers: set[str] = field(default_factory=set)  # dir names under layers/ that are broken
    bad_refs: set[str] = field(default_factory=set)  # index.json names without a complete image
    bad_entries: set[int] = field(default_factory=set)  # index.json entries that are not descriptors
    layers_dir_names: set[str] = field(default_factory=set)  # every entry under layers/
    bad_paths: set[Path] = field(default_factory=set)  # files under blobs/ that no digest names
    index_corrupt: bool = False  # index.json itself: nothing to repair it from
    parents: dict[str, str] = field(default_factory=dict)  # chain hex -> parent chain hex, from every layer.json
    ref_blob_layers: dict[str, set[str]] = field(default_factory=dict)  # ref -> chains whose blob is bad/gone
    ref_chains: dict[str, list[str]] = field(default_factory=dict)  # ref -> its chain IDs (hex), when known
    container_layers: dict[str, set[str]] = field(default_factory=dict)  # holder label -> chain hexes
    counts: dict[str, int] = field(default_factory=dict)

    def problem(self, line: str) -> None:
        self.problems.append(line)


# -- blobs --------------------------------------------------------------------------------------------------------


def _hash_file(path: Path, algorithm: str) -> Digest:
    """The file's digest, read in chunks: never whole in memory."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


def _stored_blobs(store: Store) -> Iterator[tuple[str, Path]]:
    """(algorithm, path) of every entry under blobs/ALGORITHM/."""
    if not store.blobs.is_dir():
        return
    for algo_dir in sorted(store.blobs.iterdir()):
        if algo_dir.is_dir():
            for path in sorted(algo_dir.iterdir()):
                yield algo_dir.name, path


def check_blobs(store: Store, report: Report) -> set[Digest]:
    """Re-hash every blob; returns the digests whose file is present and verified."""
    good: set[Digest] = set()
    for algorithm, path in _stored_blobs(store):
        if path.name.startswith("."):  # atomic_write's temp name .HEX.PID.RANDOM: a write in flight, or litter
            if _dead(path.name.split(".")[2] if path.name.count(".") >= 3 else ""):
                report.litter.append(path)
            continue
        try:
            digest = Digest(algorithm, path.name)
        except StrataError:
            report.problem(f"blob {algorithm}/{path.name}: not a blob name")
            report.bad_paths.add(path)
            continue
        if not path.is_file() or path.is_symlink():
            report.problem(f"blob {digest}: not a regular file")
            report.bad_blobs.add(digest)
            continue
        try:
            actual = _hash_file(path, algorithm)
        except OSError as e:
            report.problem(f"blob {digest} unreadable: {e.strerror}")
            report.bad_blobs.add(digest)
            continue
        if actual != digest:
            report.problem(f"blob {digest} corrupt: hash is {actual}")
            report.bad_blobs.add(digest)
        else:
            good.add(digest)
    report.counts["blobs"] = len(good) + len(report.bad_blobs)
    return good


class DiffIds:
    """The diff_id of each verified layer blob, computed at most once: a blob may back several refs and layers."""

    def __init__(self, store: Store, good: set[Digest]) -> None:
        self.store = store
        self.good = good
        self._known: dict[Digest, Digest | str] = {}

    def of(self, blob: Digest) -> Digest | str | None:
        """The tar's digest, an error text when the blob does not decompress, None when the blob is not good."""
        if blob not in self.good:
            return None
        if blob not in self._known:
            self._known[blob] = self._compute(blob)
        return self._known[blob]

    def _compute(self, blob: Digest) -> Digest | str:
        try:
            return compress.tar_digest(self.store.blob_path(blob), CHUNK)
        except StrataError as e:
            if e.kind is not Kind.INTEGRITY:
                raise
            return str(e)


# -- layers -------------------------------------------------------------------------------------------------------


def _read_record(layer_dir: Path) -> LayerRecord | str:
    """The layer's record, or why there is none."""
    try:
        obj = read_json(layer_dir / "layer.json")
    except FileNotFoundError:
        return "layer.json missing"
    except (ValueError, UnicodeDecodeError) as e:
        return f"layer.json corrupt: {str(e).splitlines()[0]}"
    except OSError as e:
        return f"layer.json unreadable: {e.strerror}"
    try:
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        return LayerRecord.from_json(obj)
    except (StrataError, KeyError, TypeError, ValueError) as e:
        return f"layer.json corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def check_layers(store: Store, report: Report, diff_ids: DiffIds) -> dict[str, LayerRecord]:
    """Every dir under layers/; returns the sound ones by chain hex. A layer on a broken or missing parent is
    broken too: overlayfs would stack it on nothing, and pull would unpack on top of a layer it cannot trust."""
    records: dict[str, LayerRecord] = {}
    if not store.layers.is_dir():
        report.counts["layers"] = 0
        return records
    names = sorted(p.name for p in store.layers.iterdir())
    report.counts["layers"] = len(names)
    report.layers_dir_names = set(names)
    for name in names:
        why = _layer_problem(store.layers / name, name, report, diff_ids)
        if isinstance(why, str):
            report.problem(why)
            report.bad_layers.add(name)
        else:
            records[name] = why
    _drop_orphans(records, report)
    return records


def _layer_problem(layer_dir: Path, name: str, report: Report, diff_ids: DiffIds) -> LayerRecord | str:
    """One layer dir's record, or the problem line that makes it broken (its parent is checked later)."""
    try:
        Digest("sha256", name)
    except StrataError:
        return f"layer {name}: not a chain ID"
    label = f"layer sha256:{name}"
    if not layer_dir.is_dir() or layer_dir.is_symlink():
        return f"{label}: not a directory"
    record = _read_record(layer_dir)
    if isinstance(record, str):
        return f"{label}: {record}"
    if record.parent is not None:
        report.parents[name] = record.parent.hex
    if not (layer_dir / "diff").is_dir() or (layer_dir / "diff").is_symlink():
        return f"{label}: diff/ missing"
    if record.chain_id.hex != name:
        return f"{label}: layer.json says chain_id {record.chain_id}"
    expected = chain_ids([record.parent, record.diff_id])[-1] if record.parent else record.diff_id
    if expected != record.chain_id:
        return (f"{label}: chain_id does not follow from parent {record.parent} and diff_id {record.diff_id} "
                f"(that is {expected})")
    tar = diff_ids.of(record.blob_digest)
    if isinstance(tar, str):
        return f"{label}: source blob {record.blob_digest} {tar}"
    if tar is not None and tar != record.diff_id:
        return f"{label}: layer.json says diff_id {record.diff_id}, its blob {record.blob_digest} holds {tar}"
    return record


def _drop_orphans(records: dict[str, LayerRecord], report: Report) -> None:
    """Take out of ``records`` every layer whose parent is not among them, until none is left: a chain's parent
    is checked before it only if we walk until nothing changes."""
    changed = True
    while changed:
        changed = False
        for name, record in sorted(records.items()):
            if record.parent is None:
                continue
            parent = record.parent.hex
            if parent not in records:
                why = "is broken" if parent in report.bad_layers else "missing"
                report.problem(f"layer sha256:{name}: parent {record.parent} {why}")
                report.bad_layers.add(name)
                del records[name]
                changed = True


# -- references ---------------------------------------------------------------------------------------------------


def _index_entries(store: Store, report: Report) -> list[Any] | None:
    try:
        doc = read_json(store.index_path)
    except (ValueError, UnicodeDecodeError) as e:
        report.problem(f"index.json corrupt: {str(e).splitlines()[0]}")
        report.index_corrupt = True
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        report.problem("index.json corrupt: not an OCI index")
        report.index_corrupt = True
        return None
    return list(doc["manifests"])


def _small_blob(store: Store, digest: Digest, good: set[Digest]) -> bytes | str:
    """A verified manifest/config/index blob, or why it is not usable. Size first: index.json may name a
    gigabyte layer blob as a manifest, and that must not be read whole into memory."""
    if digest in good:
        size = store.blob_path(digest).stat().st_size
        if size > MAX_MANIFEST_BYTES:
            return f"is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit for a document"
        return store.blob_path(digest).read_bytes()
    return "corrupt" if store.blob_path(digest).exists() else "missing"


def _check_ref(store: Store, report: Report, name: str, desc: Descriptor, good: set[Digest],
               records: dict[str, LayerRecord], diff_ids: DiffIds) -> None:
    """One reference: manifest -> config -> layers. Stops at the first break that hides the rest."""
    label = f"ref {name}"
    bad_before = len(report.problems)
    _check_index(store, report, label, desc, good)
    image = _ref_image(store, report, label, desc, good)
    if image is None:
        report.bad_refs.add(name)
        return
    chains = [c.hex for c in image.chain_ids]
    report.ref_chains[name] = chains
    for i, (layer, chain) in enumerate(zip(image.layers, chains, strict=True)):
        what = f"{label}: layer {i + 1}"
        tar = diff_ids.of(layer.blob.digest)
        if tar is None:
            state = "corrupt" if store.blob_path(layer.blob.digest).exists() else "missing"
            report.problem(f"{what} blob {layer.blob.digest} {state}")
        elif isinstance(tar, str):
            report.problem(f"{what} blob {layer.blob.digest} {tar}")
        elif tar != layer.diff_id:
            report.problem(f"{what} blob {layer.blob.digest} holds {tar}, the config says diff_id {layer.diff_id}")
        if tar != layer.diff_id:
            report.ref_blob_layers.setdefault(name, set()).add(chain)
        if chain not in records:
            why = "broken" if chain in report.bad_layers else "not unpacked"
            report.problem(f"{what} (chain sha256:{chain}) {why}")
    if len(report.problems) > bad_before:
        report.bad_refs.add(name)


def _check_index(store: Store, report: Report, label: str, desc: Descriptor, good: set[Digest]) -> None:
    """The index a reference was resolved from, when it was: present, verified, an index, listing the manifest."""
    top = desc.annotations.get(INDEX_DIGEST_ANNOTATION)
    if not top:
        return
    try:
        index_digest = Digest.parse(top)
    except StrataError as e:
        report.problem(f"{label}: bad {INDEX_DIGEST_ANNOTATION} annotation: {e}")
        return
    raw = _small_blob(store, index_digest, good)
    if isinstance(raw, str):
        report.problem(f"{label}: index {index_digest} {raw}")
        return
    try:
        kind = media_type_of(raw, None, f"index {index_digest}")
        index = Index.parse(raw, kind, f"index {index_digest}")
        if kind not in INDEX_TYPES:
            report.problem(f"{label}: index {index_digest} is not an index")
        elif desc.digest not in {m.digest for m in index.manifests}:
            report.problem(f"{label}: index {index_digest} does not list manifest {desc.digest}")
    except StrataError as e:
        report.problem(f"{label}: {e}")


def _ref_image(store: Store, report: Report, label: str, desc: Descriptor, good: set[Digest]) -> Image | None:
    """The image a reference names, its manifest and config present, verified and agreeing (as
    :meth:`Image.build` checks every image); None, with the problem reported, when they are not."""
    raw = _small_blob(store, desc.digest, good)
    if isinstance(raw, str):
        report.problem(f"{label}: manifest {desc.digest} {raw}")
        return None
    if len(raw) != desc.size:
        report.problem(f"{label}: manifest {desc.digest} is {len(raw)} bytes, index.json says {desc.size}")
    try:
        manifest = Manifest.parse(raw, desc.media_type, f"manifest {desc.digest}")
    except StrataError as e:
        report.problem(f"{label}: {e}")
        return None
    config = _small_blob(store, manifest.config.digest, good)
    if isinstance(config, str):
        report.problem(f"{label}: config {manifest.config.digest} {config}")
        return None
    try:
        return Image.build(Document(raw, desc.media_type, desc.digest), config, label)
    except StrataError as e:
        report.problem(str(e))
        return None


def check_refs(store: Store, report: Report, good: set[Digest], records: dict[str, LayerRecord],
               diff_ids: DiffIds) -> None:
    entries = _index_entries(store, report)
    if entries is None:
        return
    report.counts["refs"] = len(entries)
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        try:
            desc = Descriptor.from_json(entry, f"index.json entry {n + 1}")
        except StrataError as e:
            report.problem(str(e))
            report.bad_entries.add(n)
            continue
        name = desc.annotations.get(REF_NAME_ANNOTATION)
        if not name:
            continue  # an untagged entry another tool wrote: not ours to judge beyond its shape
        if name in seen:
            report.problem(f"ref {name}: listed more than once in index.json")
            report.bad_refs.add(name)
            continue
        seen.add(name)
        _check_ref(store, report, name, desc, good, records, diff_ids)


# -- containers and tmp/ ------------------------------------------------------------------------------------------


def check_holds(store: Store, report: Report, records: dict[str, LayerRecord]) -> None:
    """A holder (a container) rests on the layers it holds: with one gone it cannot start again. An unreadable
    hold is a problem: until it is fixed, GC keeps every layer."""
    holds = store.holds()
    for line in holds.unreadable:
        report.problem(f"hold {line}: GC keeps every layer until it is fixed or removed")
    for hold in holds.holds:
        chains = [c.hex for c in hold.layers]
        report.container_layers[hold.label] = set(chains)
        for chain in chains:
            if chain not in records:
                why = "broken" if chain in report.bad_layers else "missing"
                report.problem(f"{hold.label}: layer sha256:{chain} {why}")


def _dead(pid: str) -> bool:
    """Is ``pid`` (text from a temp name) a process that is gone? Not a pid at all: not ours to call litter."""
    return pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))


def check_tmp(store: Store, report: Report) -> None:
    """Litter is what Store.sweep_tmp would remove: entries of processes that are gone."""
    if not store.tmp.is_dir():
        return
    for entry in sorted(store.tmp.iterdir()):
        if _dead(entry.name.split(".", 1)[0]):
            report.litter.append(entry)
    report.partials.extend(store.partials())


# -- the whole check, and repair ----------------------------------------------------------------------------------


def check(store: Store) -> Report:
    """Every check; the caller holds the store's locks."""
    report = Report()
    good = check_blobs(store, report)
    diff_ids = DiffIds(store, good)
    records = check_layers(store, report, diff_ids)
    check_refs(store, report, good, records, diff_ids)
    check_holds(store, report, records)
    check_tmp(store, report)
    return report


@dataclass
class Plan:
    blobs: set[Digest]
    layers: set[str]
    refs: set[str]
    kept_layers: dict[str, str]  # chain hex -> the container that keeps it


def plan_repair(report: Report) -> Plan:
    """What to remove. A fixpoint: a layer removed takes the layers on it and the refs that need it along; a ref
    untagged because a layer blob is gone takes that layer along (or pull would never fetch the blob again)."""
    in_use = {c: n for n, chains in sorted(report.container_layers.items()) for c in chains}
    layers: set[str] = set()
    refs = set(report.bad_refs)
    kept: dict[str, str] = {}

    def take(chain: str) -> bool:
        if chain in layers:
            return False
        if chain in in_use:
            kept[chain] = in_use[chain]
            return False
        layers.add(chain)
        return True

    for chain in sorted(report.bad_layers):
        take(chain)
    changed = True
    while changed:
        changed = False
        for ref in sorted(refs):
            for chain in sorted(report.ref_blob_layers.get(ref, set())):
                if chain in report.layers_dir_names:
                    changed |= take(chain)
        for chain, parent in sorted(report.parents.items()):
            if parent in layers:
                changed |= take(chain)
        for ref, chains in sorted(report.ref_chains.items()):
            if ref not in refs and any(c in layers for c in chains):
                refs.add(ref)
                changed = True
    return Plan(set(report.bad_blobs), layers, refs, kept)


def _drop_refs(store: Store, names: set[str], entries: set[int]) -> None:
    """Rewrite index.json without these references (and malformed entries); the caller holds the lock."""
    doc = read_json(store.index_path)
    doc["manifests"] = [m for n, m in enumerate(doc["manifests"]) if n not in entries and not (
        isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) in names)]
    write_json(store.index_path, doc)


def repair(store: Store, report: Report, plan: Plan) -> list[str]:
    """Remove what the plan says, references first (so nothing points at what goes), then layers top first,
    then blobs, then litter. Returns one line per thing removed."""
    done: list[str] = []
    if (plan.refs or report.bad_entries) and not report.index_corrupt:
        _drop_refs(store, plan.refs, report.bad_entries)
        done += [f"Untagged: {r}" for r in sorted(plan.refs)]
        done += [f"Removed: index.json entry {n + 1}" for n in sorted(report.bad_entries)]
    for chain in sorted(plan.layers, key=lambda c: -_depth(report.parents, c)):
        store.discard(store.layers / chain)
        done.append(f"Removed: layer sha256:{chain}" if len(chain) == 64 else f"Removed: layers/{chain}")
    for blob in sorted(plan.blobs):
        remove_tree(store.blob_path(blob))
        done.append(f"Removed: blob {blob}")
    for path in sorted(report.bad_paths):
        remove_tree(path)
        done.append(f"Removed: {path.relative_to(store.root)}")
    for path in report.litter:
        with contextlib.suppress(StrataError):  # litter that cannot go (a mount point in it) stays litter
            remove_tree(path)
            done.append(f"Removed: {path.relative_to(store.root)}")
    return done


def _depth(parents: dict[str, str], chain: str) -> int:
    """How many layers lie below ``chain``: removal goes top first, so no layer is ever left on a missing one."""
    depth = 0
    while chain in parents and depth < len(parents):
        chain = parents[chain]
        depth += 1
    return depth


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def run(store: Store, do_repair: bool) -> int:
    """The command: print problems (and litter), repair if asked, a summary line; 0 when nothing is left."""
    if not store.exists():
        raise not_found(f"no store at {store.root}")
    with store.in_use(exclusive=True), store.lock():
        report = check(store)
        for line in report.problems:
            print(line)
        for path in report.litter:
            print(f"litter: {path.relative_to(store.root)} (its process is gone)")
        for path in report.partials:
            print(f"partial: {path.relative_to(store.root)} ({_size(path)} bytes of an interrupted download, which "
                  f"the next pull resumes{'; removed' if do_repair else ''})")
        left = len(report.problems)
        if do_repair:
            for path in report.partials:
                path.unlink(missing_ok=True)
        if do_repair and (report.problems or report.litter):
            plan = plan_repair(report)
            for line in repair(store, report, plan):
                print(line)
            for chain, container in sorted(plan.kept_layers.items()):
                print(f"Kept: layer sha256:{chain}, {container} uses it (remove the container)")
            left = _unrepaired(report, plan)
    counts = report.counts
    checked = f"{_count(counts.get('blobs', 0), 'blob')}, {_count(counts.get('layers', 0), 'layer')}, " \
              f"{_count(counts.get('refs', 0), 'ref')} checked"
    found = _count(len(report.problems), "problem")
    if not report.problems:
        print(f"fsck: clean ({checked})")
    elif not do_repair:
        print(f"fsck: {found} ({checked}); puller fsck --repair removes what is broken")
    elif left == 0:
        print(f"fsck: {found} repaired ({checked}); pull the untagged references again")
    else:
        print(f"fsck: {found}, {_count(left, 'problem')} left after repair ({checked})")
    return 1 if left else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _unrepaired(report: Report, plan: Plan) -> int:
    """Problems --repair cannot take away: a corrupt index.json, containers on broken layers, layers they keep."""
    left = sum(1 for p in report.problems if p.startswith(("container ", "hold ")))
    return left + int(report.index_corrupt) + len(plan.kept_layers)
