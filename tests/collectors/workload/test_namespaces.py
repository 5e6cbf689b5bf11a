"""The namespace directory (issue 18: namespace labels name cost centers) against a real
HTTP server on 127.0.0.1 serving ``GET /api/v1/namespaces`` as the API server does: a
``NamespaceList`` whose items carry ``metadata.name`` and ``metadata.labels``
(kubernetes/api ``core/v1/types.go``, ``type NamespaceList``/``type Namespace``). It keeps
the last good list through a 500 and says so, and reads memory only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gpuledger.collectors.workload.namespaces import (
    KubernetesNamespaceDirectory,
    StaticNamespaceDirectory,
    namespaces_from_list,
)
from tests.support.standins import Behaviour, StandIn, wait_until


def _namespace(name: str, labels: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "resourceVersion": "7"}
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def _list(*items: dict[str, Any]) -> bytes:
    doc = {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
           "items": list(items)}  # fmt: skip
    return json.dumps(doc).encode()


def test_a_namespace_list_is_read_checked() -> None:
    got = namespaces_from_list(
        json.loads(
            _list(
                _namespace("ml", {"team": "ml-platform", "kubernetes.io/metadata.name": "ml"}),
                _namespace("bare"),
                _namespace("odd", {"team": 7, "cost-center": "x"}),  # non-string dropped
                {"metadata": {}},  # no name: skipped
                "not an object",
            )
        )
    )
    assert {k: dict(v) for k, v in got.items()} == {
        "ml": {"team": "ml-platform", "kubernetes.io/metadata.name": "ml"},
        "bare": {},
        "odd": {"cost-center": "x"},
    }
    with pytest.raises(ValueError, match="not a NamespaceList"):
        namespaces_from_list({"kind": "Status"})


def test_the_directory_lists_keeps_the_last_good_list_and_recovers() -> None:
    body = _list(_namespace("ml", {"team": "ml-platform"}), _namespace("search"))
    with StandIn(Behaviour(body=body, content_type="application/json")) as api:
        directory = KubernetesNamespaceDirectory(
            host=api.url, resync_seconds=0.2, retry_seconds=0.1, request_timeout_seconds=2
        )
        try:
            assert directory.wait_synced(10)
            assert directory.healthy
            assert directory.last_error is None
            assert directory.labels("ml") == {"team": "ml-platform"}
            assert directory.labels("search") == {}
            assert directory.labels("absent") is None
            api.behaviour = Behaviour(body=b"boom", status=500)
            wait_until(lambda: not directory.healthy)
            assert directory.last_error == "HTTP 500"
            assert directory.labels("ml") == {"team": "ml-platform"}  # kept
            relabelled = _list(_namespace("ml", {"team": "ml-infra"}))
            api.behaviour = Behaviour(body=relabelled, content_type="application/json")
            wait_until(lambda: directory.healthy and directory.labels("ml") == {"team": "ml-infra"})
            assert directory.labels("search") is None  # gone from the list: gone here
        finally:
            directory.close()


def test_the_static_directory() -> None:
    d = StaticNamespaceDirectory({"ml": {"team": "a"}})
    assert d.labels("ml") == {"team": "a"}
    assert d.labels("x") is None
