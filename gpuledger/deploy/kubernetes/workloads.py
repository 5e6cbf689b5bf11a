"""The pods: the node agent's DaemonSet and headless Service, the reporter's Deployment,
Service and report volume, with their resources and probes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpuledger.deploy.kubernetes.common import (
    AGENT,
    CONFIG_DIR,
    HOST_PROC,
    POD_RESOURCES_DIR,
    PORT,
    PORT_NAME,
    REPORTER,
    REPORTS_PVC,
    RUN_AS_USER,
    STATE_DIR,
    config_hash,
    container_security,
    copy_resources,
    dump_yaml,
    object_labels,
    object_meta,
    selector_labels,
)
from gpuledger.deploy.kubernetes.config import (
    agent_config,
    config_mounts,
    config_volumes,
    reporter_config,
)
from gpuledger.deploy.kubernetes.options import ManifestOptions

# Sized from docs/performance.md (8 simulated GPUs + an 8-GPU dcgm-exporter page): steady
# RSS 66.9 MiB, CPU 16.5 ms mean / 19.4 ms p90 per 15 s cycle (~0.1 % of a core).
AGENT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}
REPORTER_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
INIT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "100m", "memory": "64Mi"},
}


def _probes() -> dict[str, Any]:
    return {
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 20,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": PORT_NAME},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
    }


# --- the node agent --------------------------------------------------------------------------
# Chowns the hostPath state directory (created root:root 0755 by the kubelet) to the agent's
# uid; lchown never follows a link. The only root step, with CAP_CHOWN and nothing else.
def chown_script(uid: int = RUN_AS_USER) -> str:
    return (
        "import os\n"
        f"uid = gid = {uid}\n"
        f"for d, _, files in os.walk({STATE_DIR!r}):\n"
        "    for p in [d] + [os.path.join(d, f) for f in files]:\n"
        "        st = os.lstat(p)\n"
        "        if (st.st_uid, st.st_gid) != (uid, gid):\n"
        "            os.lchown(p, uid, gid)\n"
    )


def agent_uid(o: ManifestOptions) -> int:
    """The agent container's uid: root (no capabilities) where it reads the kubelet's
    pod-resources socket, which admits its owner only; else the image's non-root uid. The
    state directory is handed to it: root without CAP_DAC_OVERRIDE writes only what it owns."""
    return 0 if o.pod_resources else RUN_AS_USER


def _agent_env(o: ManifestOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    if o.dcgm_url is not None:
        # HOST_IP first: Kubernetes expands $(HOST_IP) only from variables defined before.
        env.append({"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}})
        env.append({"name": "GPULEDGER_DCGM__URL", "value": o.dcgm_url})
    env += [
        # The NVIDIA container runtime mounts the driver's NVML library and every device
        # node without a GPU being claimed from the device plugin.
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
    ]
    return env


def daemonset(o: ManifestOptions) -> dict[str, Any]:
    volumes = [
        *config_volumes(),
        {"name": "state", "hostPath": {"path": STATE_DIR, "type": "DirectoryOrCreate"}},
    ]
    mounts = [*config_mounts(), {"name": "state", "mountPath": STATE_DIR}]
    if o.process_attribution:
        volumes.append({"name": "host-proc", "hostPath": {"path": "/proc", "type": "Directory"}})
        mounts.append({"name": "host-proc", "mountPath": HOST_PROC, "readOnly": True})
    if o.pod_resources:
        volumes.append(
            {
                "name": "pod-resources",
                # DirectoryOrCreate: a node without the socket still starts the agent
                # (podresources is then down, the other sources attribute).
                "hostPath": {"path": POD_RESOURCES_DIR, "type": "DirectoryOrCreate"},
            }
        )
        mounts.append({"name": "pod-resources", "mountPath": POD_RESOURCES_DIR, "readOnly": True})
    agent_yaml = dump_yaml(agent_config(o))
    container: dict[str, Any] = {
        "name": "agent",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gpuledger"],
        "args": ["agent", "--config", f"{CONFIG_DIR}/agent.yaml"],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": _agent_env(o),
        "resources": copy_resources(AGENT_RESOURCES),
        **_probes(),
        # The kubelet's socket admits its owner, root, only: with pod-resources on, the
        # agent runs as uid 0 -- every capability dropped, no privilege escalation,
        # read-only root filesystem.
        "securityContext": container_security(run_as_root=o.pod_resources),
        "volumeMounts": mounts,
    }
    init: dict[str, Any] = {
        "name": "chown-state",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", chown_script(agent_uid(o))],
        "resources": copy_resources(INIT_RESOURCES),
        "securityContext": container_security(add=("CHOWN",), run_as_root=True),
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
    }
    pod: dict[str, Any] = {
        "serviceAccountName": AGENT,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "hostPID": o.process_attribution,
    }
    if o.runtime_class is not None:
        pod["runtimeClassName"] = o.runtime_class
    if o.priority_class is not None:
        pod["priorityClassName"] = o.priority_class
    pod.update(
        {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            # SIGTERM: the agent stops serving, closes NVML and flushes the spool in < 5 s.
            "terminationGracePeriodSeconds": 15,
            "securityContext": {
                "fsGroup": RUN_AS_USER,  # the Secret and ConfigMap files (not the hostPath)
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [init],
            "containers": [container],
            "volumes": volumes,
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": object_meta(AGENT, "agent", o.namespace),
        "spec": {
            "selector": {"matchLabels": selector_labels("agent")},
            "updateStrategy": {
                "type": "RollingUpdate",
                # maxSurge 0: two agents on one node would share the hostPath spool.
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "template": {
                "metadata": {
                    "labels": object_labels("agent"),
                    # A new config rolls the pods (the agent reads it only at start).
                    "annotations": {"gpuledger.io/config-sha256": config_hash(agent_yaml)},
                },
                "spec": pod,
            },
        },
    }


def agent_service(o: ManifestOptions) -> dict[str, Any]:
    """Headless: one endpoint per agent pod for the ServiceMonitor; a virtual IP that load
    balances over nodes would mean nothing for a per-node agent."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(AGENT, "agent", o.namespace),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels("agent"),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


# --- the reporter ----------------------------------------------------------------------------
def reports_pvc(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(REPORTS_PVC, "reporter", o.namespace),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def reporter_deployment(o: ManifestOptions) -> dict[str, Any]:
    reporter_yaml = dump_yaml(reporter_config(o)) + (o.rate_card_text or "")
    container: dict[str, Any] = {
        "name": "reporter",
        "image": o.reporter_ref,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gpuledger"],
        "args": ["agent", "--config", f"{CONFIG_DIR}/reporter.yaml"],
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            # matplotlib (the HTML report's charts) wants a writable config/cache directory
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},  # noqa: S108 -- emptyDir
            {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"},  # noqa: S108
        ],
        "resources": copy_resources(REPORTER_RESOURCES),
        **_probes(),
        "securityContext": container_security(),
        "volumeMounts": [*config_mounts(), {"name": "reports", "mountPath": STATE_DIR}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(REPORTER, "reporter", o.namespace),
        "spec": {
            "replicas": 1,
            # Recreate: a ReadWriteOnce volume, and one writer of each month's report.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels("reporter")},
            "template": {
                "metadata": {
                    "labels": object_labels("reporter"),
                    "annotations": {"gpuledger.io/config-sha256": config_hash(reporter_yaml)},
                },
                "spec": {
                    "serviceAccountName": REPORTER,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 15,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,  # the volume is writable by the agent's group
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        *config_volumes(),
                        {"name": "reports", "persistentVolumeClaim": {"claimName": REPORTS_PVC}},
                    ],
                },
            },
        },
    }


def reporter_service(o: ManifestOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(REPORTER, "reporter", o.namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels("reporter"),
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def notes(o: ManifestOptions) -> dict[str, str]:
    """The header comments of this family's files."""
    req, lim = AGENT_RESOURCES["requests"], AGENT_RESOURCES["limits"]
    attribution = (
        "hostPID: true and /proc (hostPath, read-only) at /host/proc = attribution.proc_root"
        if o.process_attribution
        else "process attribution is off (--no-process-attribution): no hostPID, no /proc"
    )
    return {
        "daemonset.yaml": f"""\
# The gpuledger node agent: one pod per GPU node (nvidia.com/gpu.present=true, the label
# GPU feature discovery / the GPU Operator sets), tolerating the nvidia.com/gpu taint.
#
# NVML: the agent loads the host driver's libnvidia-ml and opens /dev/nvidiactl and
# /dev/nvidia*, yet requests no nvidia.com/gpu (no inference pod loses a GPU to it).
# NVIDIA_VISIBLE_DEVICES=all + NVIDIA_DRIVER_CAPABILITIES=utility make the NVIDIA
# container runtime inject the utility libraries and every device node. That needs:
#  - the NVIDIA runtime to run this pod: the default runtime where the GPU Operator set
#    up the toolkit; otherwise generate with --runtime-class nvidia (runtimeClassName);
#  - the toolkit to honour NVIDIA_VISIBLE_DEVICES in unprivileged pods
#    (accept-nvidia-visible-devices-envvar-when-unprivileged = true, its default);
#  - device nodes usable by uid {RUN_AS_USER} (the driver's default NVreg_DeviceFileMode=0666).
# No privileged container and no added capability in the agent container.
#
# hostPID: NVML names each GPU process by its PID *in the caller's PID namespace*; from a
# pod's own namespace the other pods' processes are invisible. With hostPID the agent
# sees host PIDs and reads /host/proc/PID/cgroup to find each one's pod and container.
# Here: {attribution}.
# hostPID and hostPath volumes need Pod Security level privileged (see namespace.yaml).
# Without process attribution, pods are attributed from dcgm-exporter's pod labels
# (--dcgm-url) and the static mapping only.
#
# dcgm-exporter: off unless generated with --dcgm-url; e.g.
# --dcgm-url 'http://$(HOST_IP):9400/metrics' when dcgm-exporter has hostPort 9400
# (HOST_IP is status.hostIP). An enabled but unreachable dcgm keeps /readyz at 503.
#
# The kubelet pod-resources socket: {POD_RESOURCES_DIR} mounted read-only
# (hostPath DirectoryOrCreate) and read by the podresources collector, so a pod that holds
# a GPU without running a process on it is billed (busy 0), not idle. The socket admits
# root only: the agent container runs as uid 0 with every capability dropped. Where the
# socket is absent, gpuledger_collector_up{{collector="podresources"}} is 0 (one log line),
# /readyz does not wait for it, and attribution goes on from processes and dcgm-exporter.
# --no-pod-resources: no mount, the agent runs as uid {RUN_AS_USER}.
#
# State: hostPath {STATE_DIR} (spool, default SQLite ledger) survives pod restarts.
# The kubelet creates it root:root; the init container chown-state (root with CAP_CHOWN
# only, read-only root fs) hands it and its files to the agent's uid ({agent_uid(o)}), which
# also adopts a directory left by an agent that ran as another uid. The image must have python3 on
# PATH.
#
# Resources, from docs/performance.md (8 GPUs + an 8-GPU dcgm page): steady RSS
# 66.9 MiB, CPU 16.5 ms per 15 s cycle (~0.1 % of a core). requests cpu {req["cpu"]} /
# memory {req["memory"]}: ~2x the measured RSS, room for vLLM pages and probes; limits cpu
# {lim["cpu"]} (start-up imports) / memory {lim["memory"]}. A page within the caps
# (dcgm.max_bytes 16 MiB, max_samples 100,000) parses in < 2 s with < 64 MiB extra.
""",
        "deployment-reporter.yaml": f"""\
# The reporter: one replica (Recreate: ReadWriteOnce volume, one writer per month) that
# writes last month's chargeback on report.schedule (UTC) into the PVC {REPORTS_PVC}
# and serves /reports/ and /api/v1/reports behind the API token:
#   kubectl -n {o.namespace} port-forward svc/{REPORTER} {PORT}
# Alternative: a monthly CronJob running `gpuledger report --config ...` with the same
# volumes; the Deployment also serves the reports and catches up on a missed month.
# Resources are an estimate (not in docs/performance.md): matplotlib and Jinja2 render the
# HTML; the month is aggregated by PostgreSQL.
""",
    }
