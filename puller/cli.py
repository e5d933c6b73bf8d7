"""The ``puller`` command line: thin; the work is in :mod:`puller.pull`, :mod:`puller.registry` and :mod:`shared`."""

from __future__ import annotations

import json
import sys

import typer

from shared.cli import StoreOption, run_main, run_typer
from shared.errors import Kind, StrataError, usage
from shared.format import human_size

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pull container images from Docker Hub or any OCI registry into the Strata store.")

state = StoreOption(app)


@app.command()
def pull(image: str = typer.Argument(..., help="NAME[:TAG] or NAME@DIGEST, normalized as Docker does"),
         platform: str | None = typer.Option(None, "--platform", help="OS/ARCH or OS/ARCH/VARIANT (default: host)"),
         jobs: int = typer.Option(3, "--jobs", "-j", min=1, max=16, help="Parallel blob downloads"),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the image's reference"),
         insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] to reach over plain "
                                            "HTTP or unchecked TLS (repeatable)"),
         mirror: list[str] = typer.Option([], "--mirror", help="[REGISTRY=]URL of a mirror, tried before the "
                                          "registry; REGISTRY defaults to docker.io (repeatable)")) -> None:
    """Fetch an image's manifest and blobs, verify every digest, unpack each layer into its own diff dir."""
    from puller import progress as progress_mod
    from puller.pull import pull as do_pull
    from shared import reference, settings
    from shared.image import Platform

    ref = reference.parse(image)
    wanted = Platform.parse(platform) if platform else None
    config = settings.load().with_options(insecure, mirror)
    show = progress_mod.for_output(quiet)
    show.message(f"Pulling {ref}")
    result = do_pull(state.store, ref, config, wanted, jobs, show)
    show.message(f"Digest: {result.manifest_digest}")
    show.message(f"Status: {'Image is up to date' if result.up_to_date else 'Downloaded newer image'} for {ref}")
    print(ref)


@app.command()
def images(repository: str | None = typer.Argument(None, metavar="[REPOSITORY[:TAG]]",
                                                   help="Only this repository's images (or this tag's)"),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="Only image IDs"),
           no_trunc: bool = typer.Option(False, "--no-trunc", help="Full image IDs (sha256:...)"),
           digests: bool = typer.Option(False, "--digests", help="Add a DIGEST column"),
           fmt: str | None = typer.Option(None, "--format", help="table, json (one object a line), 'table "
                                          "TEMPLATE' or a Go-like TEMPLATE: {{.Repository}}:{{.Tag}}; fields "
                                          "Repository, Tag, ID, Digest, CreatedSince, CreatedAt, Size")) -> None:
    """List the images in the store, newest first, as docker images does."""
    from puller import images as images_mod
    from shared import format as format_mod

    rows = images_mod.listing_fields(state.store, repository, no_trunc)
    if quiet:
        fmt = "{{.ID}}"
    default = images_mod.TABLE_DIGESTS if digests else images_mod.TABLE
    for line in format_mod.listing(fmt, rows, default, images_mod.HEADERS):
        print(line)


@app.command()
def inspect(images: list[str] = typer.Argument(..., help="References or image IDs"),
            fmt: str | None = typer.Option(None, "--format", "-f", help="json (the default) or a Go-like "
                                           "TEMPLATE run on each image: '{{.Id}}', '{{json .Config.Env}}'")) -> None:
    """Show images as docker image inspect does (a JSON array), plus each layer's two hashes and chain ID."""
    from puller import images as images_mod
    from shared.store.images import find
    from shared.template import Template, unescape

    found, missing = [], []
    for text in images:
        try:
            found.append(images_mod.inspect_document(state.store, find(state.store, text)))
        except StrataError as e:
            if e.kind is not Kind.NOT_FOUND:
                raise
            missing.append(e)
    if fmt is None or fmt.strip() == "json":
        print(json.dumps(found, indent=4))
    else:
        template = Template(unescape(fmt))
        for doc in found:
            print(template.render(doc))
    if missing:  # as Docker: what was found is printed, then the first miss fails the command
        raise missing[0]


@app.command()
def rmi(images: list[str] = typer.Argument(..., help="References or image IDs"),
        force: bool = typer.Option(False, "--force", "-f", help="Untag even if a container uses the image, or "
                                   "every reference to an image ID that several repositories or tags share")) -> None:
    """Untag images, then delete what that left unreferenced (layers of containers stay); say what and how much."""
    from shared.store import gc

    reclaimed, done = 0, 0
    try:
        for text in images:
            removal = gc.remove_image(state.store, text, force)
            for name in removal.untagged:
                print(f"Untagged: {name}")
            for freed in removal.deleted:
                print(f"Deleted: {freed.digest} ({freed.what}, {human_size(freed.size)})")
            reclaimed += removal.reclaimed
            done += 1
    finally:  # also when a later argument fails: what the earlier ones freed is freed
        if done:
            print(f"Total reclaimed space: {human_size(reclaimed)}", flush=True)


@app.command()
def login(server: str = typer.Argument("docker.io", help="Registry host[:port]"),
          username: str | None = typer.Option(None, "--username", "-u"),
          password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
          insecure: list[str] = typer.Option([], "--insecure-registry", help="HOST[:PORT] over plain HTTP")) -> None:
    """Check credentials against the registry, then save them in Docker's config.json (or its helper)."""
    import getpass

    from puller.registry import credentials
    from puller.registry.client import RegistryClient
    from puller.registry.endpoint import Credentials, Endpoint
    from shared import settings
    from shared.reference import DEFAULT_DOMAIN, DOCKER_HUB_REGISTRY_HOST

    registry = DEFAULT_DOMAIN if server in ("docker.io", "index.docker.io", DOCKER_HUB_REGISTRY_HOST) else server
    try:
        user = username or input("Username: ")
        secret = sys.stdin.readline().rstrip("\n") if password_stdin else getpass.getpass("Password: ")
    except EOFError:  # caught here: typer would print a blank line first
        raise usage("input ended before the command had what it asked for") from None
    if not user or not secret:
        raise usage("a username and a password are needed")
    host = DOCKER_HUB_REGISTRY_HOST if registry == DEFAULT_DOMAIN else registry
    creds = Credentials(user, secret)
    RegistryClient(Endpoint.for_registry(host, settings.load().with_options(insecure).insecure), creds).ping()
    credentials.store(registry, creds)
    print("Login Succeeded")


@app.command()
def logout(server: str = typer.Argument("docker.io", help="Registry host[:port]")) -> None:
    """Remove saved credentials for a registry."""
    from puller.registry import credentials

    if not credentials.erase(server):
        print(f"Not logged in to {server}")
        return
    print(f"Removing login credentials for {credentials.server_key(server)}")


@app.command()
def fsck(repair: bool = typer.Option(False, "--repair", help="Remove what is broken (blobs, layers, references) "
                                     "so that pulling again restores it")) -> int:
    """Check the store: re-hash every blob, check every reference, layer and container; exit 1 on a problem."""
    from shared.store import fsck as fsck_mod

    return fsck_mod.run(state.store, repair)


# Verbs that move images, one file each under puller/verbs/ (each adds its commands to the app):
from puller.verbs import push as push_verb  # noqa: E402 - after the app and its store option

push_verb.register(app, state)
from puller.verbs import save_load  # noqa: E402 - after the app and its store option

save_load.register(app, state)
from puller.verbs import copy as _copy  # noqa: E402

_copy.register(app, state)
from puller.verbs import artifact  # noqa: E402 - after the app and its store option

artifact.register(app, state)


def main() -> None:
    run_main("puller", lambda: run_typer(app), lambda kind: 2 if kind is Kind.USAGE else 1)
