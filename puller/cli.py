"""The ``puller`` command line: thin; the work is in :mod:`puller.pull` and :mod:`shared`."""

from __future__ import annotations

from pathlib import Path

import typer

from shared.cli import run_main, run_typer
from shared.errors import Kind
from shared.store import Store, default_root

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pull container images from Docker Hub or any OCI registry into the Strata store.")


class _State:
    store: Store


state = _State()


@app.callback()
def _root(root: Path | None = typer.Option(None, "--root", help="Store root (default: $STRATA_ROOT, else "
                                           "/var/lib/strata as root, else $XDG_DATA_HOME/strata)")) -> None:
    state.store = Store(root or default_root())


@app.command()
def pull(image: str = typer.Argument(..., help="Reference: NAME[:TAG] or NAME@DIGEST, normalized as Docker does"),
         platform: str | None = typer.Option(None, "--platform", help="OS/ARCH or OS/ARCH/VARIANT, default: this host"),
         jobs: int = typer.Option(3, "--jobs", "-j", min=1, max=16, help="Parallel blob downloads"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the image's reference")) -> None:
    """Fetch an image's manifest and blobs, verify every digest, unpack each layer into its own diff dir."""
    from puller.pull import pull as do_pull
    from shared import reference
    from shared.image import Platform

    ref = reference.parse(image)
    wanted = Platform.parse(platform) if platform else None

    def say(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    say(f"Pulling {ref}")
    result = do_pull(state.store, ref, wanted, jobs, say)
    say(f"Digest: {result.manifest_digest}")
    say(f"Status: {'Image is up to date' if result.up_to_date else 'Downloaded newer image'} for {ref}")
    print(ref)


@app.command()
def images(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only image IDs")) -> None:
    """List the images in the store."""
    from shared import stored

    rows = []
    for img in stored.all_images(state.store):
        size = sum(r.size for r in img.layer_records(state.store))
        ref = img.name
        repo, tag = (ref.split("@")[0], "<none>") if "@" in ref else ref.rsplit(":", 1)
        rows.append((repo, tag, img.image_id.short, img.config.created or "", _human(size)))
    if quiet:
        for row in rows:
            print(row[2])
        return
    header = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{size}B"
        value /= 1000
    return f"{size}B"


def main() -> None:
    run_main("puller", lambda: run_typer(app), lambda kind: 1 if kind is not Kind.USAGE else 2)

