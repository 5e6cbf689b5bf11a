"""The kubelet pod-resources API (v1): which pod the device plugins and DRA drivers gave
each GPU to, whether or not that pod runs a process on it.

``api.proto`` is the upstream file, vendored verbatim (its header names the commit);
``api_pb2*.py`` are generated from it (``make podresources-stubs``) and imported only by
:mod:`.client`, the typed wrapper. :mod:`.devices` turns device ids and DRA CDI names into
GPU/MIG identities, :mod:`.collector` is the cached, time-bounded collector and
:mod:`.source` its registry record (``podresources:``).
"""
