"""Untrusted files and the network: what lightly-derm refuses to do.

- Every ``torch.load`` in the package, the examples and the benchmarks passes
  ``weights_only=True`` (a source scan, so that a new call without it fails here), and
  nothing unpickles, downloads or opens URLs.
- Checkpoints of every method load with ``weights_only=True`` (tests/reliability/
  test_determinism.py); a checkpoint that carries code is refused before the code runs.
- Plugin autoload can be disabled and single plugins blocked; a blocked plugin's module
  is never imported (its code never runs).
- Nothing opens a network connection at run time: a CLI run and a training run under
  an audit hook that refuses every internet socket connection and name lookup.
"""

from __future__ import annotations

import ast
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[2]


SCANNED = ("lightly_derm", "examples", "benchmarks")

#: Calls that download, open URLs or unpickle arbitrary objects.
FORBIDDEN = {
    "pickle.load",
    "pickle.loads",
    "dill.load",
    "dill.loads",
    "torch.hub.load",
    "torch.hub.load_state_dict_from_url",
    "torch.hub.download_url_to_file",
    "urllib.request.urlopen",
    "urllib.request.urlretrieve",
    "requests.get",
    "requests.post",
    "monai.apps.download_url",
    "monai.apps.download_and_extract",
}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``torch.load`` for ``torch.load(...)``, resolving ``import x as y`` aliases."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Loads without ``weights_only=True`` and forbidden calls in ``source``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases) or ""
        where = f"{filename}:{node.lineno}"
        if name in ("torch.load", "torch.serialization.load") and not _keyword_is_true(
            node, "weights_only"
        ):
            problems.append(f"{where}: {name}(...) without weights_only=True")
        elif name.endswith(".load_from_checkpoint") and not _keyword_is_true(
            node, "weights_only"
        ):
            problems.append(f"{where}: load_from_checkpoint without weights_only=True")
        elif any(k.arg == "ckpt_path" for k in node.keywords) and not _keyword_is_true(
            node, "weights_only"
        ):
            problems.append(f"{where}: ckpt_path=... without weights_only=True")
        elif name in ("numpy.load", "np.load") and any(
            k.arg == "allow_pickle"
            and not (isinstance(k.value, ast.Constant) and k.value.value is False)
            for k in node.keywords
        ):
            problems.append(f"{where}: numpy.load with allow_pickle")
        elif name in FORBIDDEN:
            problems.append(f"{where}: {name}(...) is not allowed")
    return problems


def _sources() -> Iterator[Path]:
    for folder in SCANNED:
        yield from sorted((REPO / folder).rglob("*.py"))


def test_source_loads_only_weights() -> None:
    files = list(_sources())
    assert len(files) > 50
    problems = [
        p
        for path in files
        for p in unsafe_calls(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert problems == []


def test_the_scan_can_fail() -> None:
    bad = textwrap.dedent(
        """
        import torch, pickle
        from torch import load as tl
        import numpy as np
        torch.load("a.ckpt")
        torch.load("b.ckpt", weights_only=False)
        tl("c.ckpt")
        Model.load_from_checkpoint("d.ckpt")
        trainer.fit(model, ckpt_path="last")
        pickle.loads(b"")
        np.load("x.npz", allow_pickle=True)
        torch.hub.load_state_dict_from_url("https://example.com/w.pth")
        torch.load("ok.ckpt", weights_only=True)
        """
    )
    assert len(unsafe_calls(bad)) == 8


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_method_checkpoint_with_code_is_refused(tmp_path, monkeypatch) -> None:
    """``load_from_checkpoint`` and ``Trainer.fit(ckpt_path=...)`` never run it."""
    from lightly_derm.callbacks import AtomicCheckpointIO
    from lightly_derm.methods import SimCLR

    monkeypatch.chdir(tmp_path)
    model = SimCLR(backbone="resnet18", hidden_dim=8, output_dim=4)
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {"evil": _Evil()}},
        tmp_path / "evil.ckpt",
    )
    with pytest.raises(Exception, match="Weights only load failed"):
        SimCLR.load_from_checkpoint(tmp_path / "evil.ckpt", weights_only=True)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=1, logger=False, plugins=[AtomicCheckpointIO()]
    )
    loader = torch.utils.data.DataLoader([0])
    with pytest.raises(Exception, match="evil.ckpt' was refused: it carries pickled"):
        trainer.fit(model, loader, ckpt_path=tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


MARKER_PLUGIN = """
import os
open(os.environ["MARKER"], "w").close()  # runs only if the module is imported
from lightly_derm.plugins import Component, hookimpl

@hookimpl
def lightly_derm_components():
    return [Component("loss", "marker_loss", "collections:OrderedDict")]
"""


@pytest.mark.parametrize(
    "env",
    [
        {"LIGHTLY_DERM_BLOCK_PLUGINS": "marker"},
        {"LIGHTLY_DERM_DISABLE_PLUGIN_AUTOLOAD": "1"},
    ],
)
def test_blocked_or_not_autoloaded_plugins_are_never_imported(
    env, clean_plugin_env, make_dist, monkeypatch, tmp_path
) -> None:
    from lightly_derm.plugins import Registry

    marker = tmp_path / "imported"
    monkeypatch.setenv("MARKER", str(marker))
    make_dist(
        "marker-dist", "1.0", {"marker": "marker_mod"}, {"marker_mod": MARKER_PLUGIN}
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    registry = Registry()
    assert ("loss", "marker_loss") not in registry
    assert registry.info("loss", "gravis").plugin == "lightly_derm"  # built-ins stay
    assert not marker.exists()
    monkeypatch.delenv(next(iter(env)))
    registry.reload()
    assert ("loss", "marker_loss") in registry and marker.exists()  # control


# --------------------------------------------------------------------------- network
class NetworkUsed(RuntimeError):
    pass


_BLOCKING: list[list[str]] = []  # the attempt lists of the active no_network fixtures


def _audit(event: str, args: tuple) -> None:
    if not _BLOCKING:
        return
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, (str, bytes)):  # AF_UNIX: a local file, not a network
            return
    elif event not in (
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.sendto",
        "urllib.Request",
        "http.client.connect",
    ):
        return
    _BLOCKING[-1].append(f"{event} {args[1:] if event == 'socket.connect' else args}")
    raise NetworkUsed(f"network access at run time: {event} {args!r:.200}")


sys.addaudithook(
    _audit
)  # audit hooks cannot be removed: active only inside the fixture


@pytest.fixture
def no_network() -> Iterator[list[str]]:
    """Every internet socket connection, name lookup and URL request raises NetworkUsed.

    Built on Python's audit hooks (PEP 578), which the socket module raises for every
    connection, so connections from any Python library are caught, not only those made
    through a patched ``socket.socket.connect``. Yields the list of attempts.
    """
    attempts: list[str] = []
    _BLOCKING.append(attempts)
    try:
        yield attempts
    finally:
        _BLOCKING.remove(attempts)


def test_no_network_fixture_catches_connections(no_network) -> None:
    import socket
    import urllib.request

    with pytest.raises(NetworkUsed):
        socket.create_connection(("192.0.2.1", 80), timeout=0.01)
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(NetworkUsed):
        urllib.request.urlopen("http://192.0.2.1/", timeout=0.01)
    assert len(no_network) == 3


def test_cli_plugins_runs_offline(no_network, capsys) -> None:
    from lightly_derm.cli import main

    assert main(["plugins", "--json"]) == 0
    assert '"name": "gravis"' in capsys.readouterr().out
    assert no_network == []


@pytest.mark.slow
def test_cli_pretrain_runs_offline(no_network, tmp_path, capsys) -> None:
    """One GraVIS epoch from the command line on a tiny folder, no network."""
    import numpy as np
    from PIL import Image

    from lightly_derm.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{i}.png"
        )
    status = main(
        [
            "pretrain",
            "--method",
            "gravis",
            "--epochs",
            "1",
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "run"),
            "--backbone",
            "resnet18",
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--accelerator",
            "cpu",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert no_network == []


def test_training_and_checkpointing_run_offline(no_network, tmp_path) -> None:
    """The building blocks outside the CLI — registry, data, Lightning fit with
    checkpoints and a resume, MONAI — under the same guard."""
    from monai.networks.nets import FlexibleUNet
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightly_derm import registry
    from lightly_derm.callbacks import (
        AtomicCheckpointIO,
        ExactResume,
        NonFiniteLossGuard,
    )
    from lightly_derm.data import ImageFolderDataset, ResumableDataLoader
    from tests.reliability.runs import images

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images(6)):
        image.save(folder / f"{i}.png")
    model = registry.create("method", "gravis", backbone="resnet18", hidden_dim=16)
    dataset = ImageFolderDataset(folder, transform=model.default_transform(32))
    loader = ResumableDataLoader(
        dataset, batch_size=3, collate_fn=model.default_collate()
    )

    def fit(epochs: int, **kwargs) -> None:
        pl.Trainer(
            accelerator="cpu",
            max_epochs=epochs,
            logger=pl.loggers.CSVLogger(tmp_path / "logs"),
            enable_progress_bar=False,
            plugins=[AtomicCheckpointIO()],
            callbacks=[
                NonFiniteLossGuard(),
                ExactResume(),
                ModelCheckpoint(tmp_path / "ckpt", save_last=True),
            ],
        ).fit(model, loader, **kwargs)

    fit(1)
    fit(2, ckpt_path=tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    FlexibleUNet(3, 1, backbone="lightly-derm-resnet18")
    assert no_network == []
