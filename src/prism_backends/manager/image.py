"""The guest image: a Debian kernel and an initramfs that runs our reference agent.

Built from Debian packages (``apt-get download``, then ``dpkg-deb -x``): the
generic kernel (it has virtio and 9p as modules, as Cocos' shares need),
busybox for the init script, and Python with its libraries; then gRPC and
protobuf as this installation has them (the guest's Python must be the same
minor version, so the compiled modules load), and the agent's own modules.

The init script follows Cocos' guest layout: it mounts ``certs_share`` at
``/etc/certs`` and ``env_share`` at ``/etc/cocos``, brings up the network
(slirp: 10.0.2.15/24 via 10.0.2.2), and runs the agent with
``/etc/cocos/environment``; when the agent exits the VM powers off.

Reproducible: the same inputs give the same bytes (entries sorted, times,
owners and inode numbers fixed, gzip without a timestamp, ``.pyc`` files
checked by hash, not by time). The image is cached under its inputs' digest
and rebuilt only when they change.
"""

from __future__ import annotations

import compileall
import gzip
import hashlib
import importlib.util
import json
import logging
import py_compile
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prism_backends import agent
from prism_backends.manager import cpio

log = logging.getLogger(__name__)

# Bumped whenever what this module puts in the image changes.
LAYOUT_VERSION = "1"
KERNEL_META_PACKAGE = "linux-image-amd64"
RUNTIME_PACKAGES = (
    "busybox-static",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libssl3",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libcrypt1",
)
GUEST_MODULES = ("virtio_pci", "virtio_net", "9pnet_virtio", "9p")
# The command line the guest is booted (and, for SEV-SNP, measured) with.
KERNEL_COMMAND_LINE = "console=ttyS0 panic=-1 quiet loglevel=3"
# Parts of the Python standard library no agent imports; leaving them out
# makes the initramfs smaller and faster to unpack under emulation.
STDLIB_PRUNED = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "config-3",
    "sqlite3",
    "dbm",
    "curses",
    "venv",
)
PRUNED_DIRECTORIES = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/gdb",
    "boot",
    "lib/modules",
    "usr/lib/modules",
    "etc",
)
# Python distributions copied from this installation, by import name.
PYTHON_PACKAGES = ("grpc", "google.protobuf", "google._upb", "typing_extensions")


class ImageError(RuntimeError):
    """The guest image cannot be built here; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initrd: Path
    command_line: str
    digest: str  # sha256 of the kernel, initrd and command line together
    kernel_version: str
    python_version: str

    @property
    def description(self) -> str:
        return f"prism-backends guest {self.digest[:12]} (Linux {self.kernel_version})"


Runner = Callable[[list[str], Path], str]


def run(argv: list[str], cwd: Path) -> str:
    """Run a build step; its failure is an ImageError naming the command."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    except FileNotFoundError:
        raise ImageError(
            f"{argv[0]} is not installed (the image is built from Debian packages)"
        ) from None
    if done.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def cached(images_dir: Path) -> GuestImage | None:
    """The most recently built image, without building (None when there is none)."""
    pointer = images_dir / "current.json"
    if not pointer.is_file():
        return None
    return _read_manifest(images_dir / json.loads(pointer.read_text())["digest_dir"])


def ensure(
    images_dir: Path,
    *,
    runner: Runner = run,
    refresh: bool = False,
    check_packages: bool = True,
) -> GuestImage:
    """The image for the current inputs, built if it is not in the cache yet.

    With ``check_packages`` false (a manager starting) a cached image whose own
    inputs (the agent, gRPC, this builder) are unchanged is taken as is, without
    asking apt about newer Debian packages; ``manager image build`` asks.
    """
    images_dir = images_dir.resolve()  # build steps run in other directories
    images_dir.mkdir(parents=True, exist_ok=True)
    if not check_packages and not refresh:
        current = _current_if_unchanged(images_dir)
        if current is not None:
            return current
    debs_dir = images_dir / "debs"
    debs_dir.mkdir(exist_ok=True)
    guest_python = _guest_python_version(runner, debs_dir)
    _require_same_python(guest_python)
    packages = [
        _kernel_package(runner, debs_dir),
        *RUNTIME_PACKAGES,
        *_python_packages(guest_python),
    ]
    debs = [_download(runner, debs_dir, name, refresh) for name in packages]
    inputs = _inputs(debs)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    target = images_dir / key
    existing = _read_manifest(target)
    if existing is None:
        log.info("building the guest image %s from %d packages", key, len(debs))
        existing = _build(target, debs, runner, guest_python, inputs)
    (images_dir / "current.json").write_text(json.dumps({"digest_dir": key}))
    return existing


def _current_if_unchanged(images_dir: Path) -> GuestImage | None:
    pointer = images_dir / "current.json"
    if not pointer.is_file():
        return None
    directory = images_dir / json.loads(pointer.read_text())["digest_dir"]
    try:
        recorded = json.loads((directory / "manifest.json").read_text())["inputs"]
    except (OSError, ValueError, KeyError):
        return None
    now = _own_inputs()
    if any(recorded.get(key) != value for key, value in now.items()):
        return None
    return _read_manifest(directory)


def _guest_python_version(runner: Runner, cwd: Path) -> str:
    """The ``python3.X`` that Debian's ``python3-minimal`` pulls in."""
    depends = runner(["apt-cache", "depends", "python3-minimal"], cwd)
    for line in depends.splitlines():
        name = line.split(":", 1)[-1].strip()
        if name.startswith("python3.") and name.endswith("-minimal"):
            return name.removeprefix("python").removesuffix("-minimal")
    raise ImageError("apt-cache knows no python3-minimal: run 'apt-get update' first")


def _require_same_python(guest: str) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if guest != here:
        raise ImageError(
            f"the guest's Python is {guest} (Debian's) but this installation runs {here}: "
            "gRPC's compiled modules would not load in the guest; "
            f"run the manager on Python {guest}"
        )


def _kernel_package(runner: Runner, cwd: Path) -> str:
    depends = runner(["apt-cache", "depends", KERNEL_META_PACKAGE], cwd)
    for line in depends.splitlines():
        name = line.split(":", 1)[-1].strip()
        if name.startswith("linux-image-") and name != KERNEL_META_PACKAGE:
            return name
    raise ImageError(f"apt-cache does not resolve {KERNEL_META_PACKAGE}: run 'apt-get update'")


def _python_packages(version: str) -> list[str]:
    return [f"python{version}-minimal", f"libpython{version}-minimal", f"libpython{version}-stdlib"]


def _download(runner: Runner, debs_dir: Path, package: str, refresh: bool) -> Path:
    """The package's .deb in ``debs_dir`` (downloaded once per version)."""
    version = _candidate_version(runner, debs_dir, package)
    found = _deb_for(debs_dir, package, version)
    if found is None or refresh:
        runner(["apt-get", "download", f"{package}={version}"], debs_dir)
        found = _deb_for(debs_dir, package, version)
    if found is None:
        raise ImageError(f"apt-get download {package}={version} left no .deb in {debs_dir}")
    return found


def _candidate_version(runner: Runner, cwd: Path, package: str) -> str:
    for line in runner(["apt-cache", "policy", package], cwd).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    raise ImageError(f"no Debian package {package} can be installed here (apt-get update?)")


def _deb_for(debs_dir: Path, package: str, version: str) -> Path | None:
    # apt-get download writes NAME_VERSION_ARCH.deb with ':' in versions as %3a.
    for candidate in debs_dir.glob(f"{package}_*.deb"):
        if candidate.name.split("_")[1].replace("%3a", ":") == version:
            return candidate
    return None


def _inputs(debs: list[Path]) -> dict[str, object]:
    """Everything the image's bytes depend on, by content."""
    return {**_own_inputs(), "debs": {deb.name: _sha256(deb) for deb in debs}}


def _own_inputs() -> dict[str, object]:
    """The inputs that are not Debian packages: this builder, the agent, gRPC."""
    sources = {path: _sha256(_source_root() / path) for path in agent.MODULES}
    python_files = {
        f"{root.name}/{name}": digest
        for root in _python_package_roots()
        for name, digest in _tree_digests(root)
    }
    return {
        "layout": LAYOUT_VERSION,
        "builder": _sha256(Path(__file__)) + _sha256(Path(cpio.__file__)),
        "python": sys.version.split()[0],
        "command_line": KERNEL_COMMAND_LINE,
        "agent": sources,
        "python_packages": python_files,
    }


def _build(
    target: Path, debs: list[Path], runner: Runner, guest_python: str, inputs: dict[str, object]
) -> GuestImage:
    parent = target.parent
    with tempfile.TemporaryDirectory(dir=parent, prefix="build-") as scratch:
        root = Path(scratch) / "root"
        root.mkdir()
        for deb in debs:
            runner(["dpkg-deb", "-x", str(deb), str(root)], parent)
        kernel_version = _kernel_version(root)
        staging = Path(scratch) / "initramfs"
        _assemble(root, staging, kernel_version, guest_python, runner)
        built = Path(scratch) / "out"
        built.mkdir()
        kernel = built / "vmlinuz"
        shutil.copyfile(root / "boot" / f"vmlinuz-{kernel_version}", kernel)
        initrd = built / "initrd.gz"
        with (
            initrd.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as packed,
        ):
            cpio.write_tree(staging, packed)
        digest = _image_digest(kernel, initrd, KERNEL_COMMAND_LINE)
        manifest = {
            "kernel_version": kernel_version,
            "python_version": guest_python,
            "command_line": KERNEL_COMMAND_LINE,
            "digest": digest,
            "inputs": inputs,
        }
        (built / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        built.rename(target)
    image = _read_manifest(target)
    assert image is not None
    return image


def _assemble(root: Path, staging: Path, kernel_version: str, python: str, runner: Runner) -> None:
    pruned = {root / relative for relative in PRUNED_DIRECTORIES}

    def skip(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if Path(directory) / name in pruned}

    shutil.copytree(root, staging, symlinks=True, ignore=skip)
    stdlib = staging / "usr" / "lib" / f"python{python}"
    for name in STDLIB_PRUNED:
        for match in stdlib.glob(f"{name}*"):
            if match.is_dir():
                shutil.rmtree(match, ignore_errors=True)
            else:
                match.unlink()
    _install_busybox(staging)
    _install_modules(root, staging, kernel_version, runner)
    # Debian's Python looks for packages in dist-packages, not site-packages.
    site = staging / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    for package_root in _python_package_roots():
        destination = site / _import_path(package_root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if package_root.is_file():
            shutil.copyfile(package_root, destination)
            continue
        shutil.copytree(
            package_root,
            destination,
            symlinks=False,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyi", "*.pyc"),
        )
    for relative in agent.MODULES:
        destination = site / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_source_root() / relative, destination)
    for directory in ("dev", "proc", "sys", "tmp", "run", "etc/certs", "etc/cocos", "root"):
        (staging / directory).mkdir(parents=True, exist_ok=True)
    init = staging / "init"
    init.write_text(init_script(python))
    init.chmod(0o755)
    for tree in (stdlib, site):
        compileall.compile_dir(
            tree,
            quiet=2,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            stripdir=str(staging),
            prependdir="/",
            workers=1,
        )


def _import_path(package_root: Path) -> Path:
    """Where a package sits below site-packages: grpc, google/protobuf, typing_extensions.py."""
    return package_root.relative_to(
        package_root.parents[1 if package_root.parent.name == "google" else 0]
    )


def _install_busybox(staging: Path) -> None:
    busybox = staging / "bin" / "busybox"
    if not busybox.is_file():
        raise ImageError("busybox-static did not provide /bin/busybox")
    for applet in (
        "sh",
        "mount",
        "mkdir",
        "ip",
        "insmod",
        "poweroff",
        "cat",
        "sleep",
        "echo",
        "ls",
    ):
        link = staging / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")


def _install_modules(root: Path, staging: Path, version: str, runner: Runner) -> None:
    """Copy the modules the guest needs and say their load order in /modules.order."""
    runner(["depmod", "-b", str(root), version], root)
    order: list[str] = []
    for module in GUEST_MODULES:
        shown = runner(["modprobe", "-d", str(root), "-S", version, "--show-depends", module], root)
        for line in shown.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                path = words[1]
                if path not in order:
                    order.append(path)
    modules_dir = staging / "modules"
    modules_dir.mkdir()
    names = []
    for path in order:
        source = Path(path)
        source = source if source.is_absolute() and source.exists() else root / path.lstrip("/")
        shutil.copyfile(source, modules_dir / source.name)
        names.append(source.name)
    (modules_dir / "order").write_text("".join(f"{name}\n" for name in names))


def init_script(python: str) -> str:
    """The guest's /init: Cocos' mounts and environment, then the agent."""
    return f"""#!/bin/sh
# prism-backends guest init: mount the manager's shares, bring up the network,
# run the agent with Cocos' environment file; power off when it ends.
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for module in $(cat /modules/order); do insmod /modules/$module 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro certs_share /etc/certs
mount -t 9p -o trans=virtio,version=9p2000.L,ro env_share /etc/cocos
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "prism-guest: starting the agent"
/usr/bin/python{python} -m prism_backends.agent --env /etc/cocos/environment
echo "prism-guest: the agent exited ($?)"
poweroff -f
"""


def _kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("the kernel package has no /boot/vmlinuz-*")
    return kernels[-1].name.removeprefix("vmlinuz-")


def _image_digest(kernel: Path, initrd: Path, command_line: str) -> str:
    digest = hashlib.sha256()
    for part in (kernel.read_bytes(), initrd.read_bytes(), command_line.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _read_manifest(directory: Path) -> GuestImage | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    return GuestImage(
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.gz",
        command_line=manifest["command_line"],
        digest=manifest["digest"],
        kernel_version=manifest["kernel_version"],
        python_version=manifest["python_version"],
    )


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _python_package_roots() -> list[Path]:
    roots = []
    for name in PYTHON_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ImageError(f"{name} is not installed here; the guest image carries it")
        if spec.origin in (None, "namespace") and spec.submodule_search_locations:
            roots.append(Path(next(iter(spec.submodule_search_locations))))
            continue
        origin = Path(str(spec.origin))
        roots.append(origin.parent if origin.name == "__init__.py" else origin)
    return roots


def _tree_digests(root: Path) -> Iterator[tuple[str, str]]:
    if root.is_file():
        yield root.name, _sha256(root)
        return
    for path in sorted(root.rglob("*")):
        if (
            path.is_file()
            and "__pycache__" not in path.parts
            and path.suffix not in (".pyc", ".pyi")
        ):
            yield str(path.relative_to(root)), _sha256(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
