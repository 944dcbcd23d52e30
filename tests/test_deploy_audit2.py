"""deploy/ against what Kubernetes, KubeRay and Prometheus do with it (second audit).

* The Deployment mounts the API token Secret at /run/secrets: the service-account token
  Kubernetes mounts at /var/run/secrets/kubernetes.io/serviceaccount (/var/run -> /run in the
  images) then needs a directory inside that read-only volume, and the container cannot start
  (kubernetes/kubernetes#65835) -- unless the pod mounts no service-account token.
* The RayJob's cluster takes jobs on the dashboard API at 0.0.0.0:8265: without Ray's token
  authentication any pod in the cluster network could run code next to the evidence.
* The pod is annotated for Prometheus; a Service selecting it annotated too gets it scraped
  twice by the usual kubernetes-pods + kubernetes-service-endpoints jobs (every sum doubles).
* Dashboard panels per stream keep the instance: the README splits streams between
  instances, and two cameras both named "lobby" were one line (the max of both verdicts).
* A scan killed outright (out of memory, SIGKILL) never pushes its end: the Pushgateway kept
  its "running" for good and no alert said its counts were partial (``DfscanScanFailed``,
  state ``lost``). Checked with ``promtool test rules`` on synthetic series, and the interval
  it needs against a real Pushgateway.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SA_TOKEN_DIR = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run/... seen through /var/run -> /run
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None and os.environ.get("CI") != "true",
                                    reason="promtool not installed (apt-get install prometheus)")


def _manifests() -> list[dict]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _pod_templates() -> dict[str, dict]:
    """Every pod template of deploy/k8s, by a readable name."""
    out = {}
    for doc in _manifests():
        if doc["kind"] == "Deployment":
            out[f"Deployment/{doc['metadata']['name']}"] = doc["spec"]["template"]
        elif doc["kind"] == "RayJob":
            spec = doc["spec"]["rayClusterSpec"]
            out["RayJob head"] = spec["headGroupSpec"]["template"]
            for g in spec["workerGroupSpecs"]:
                out[f"RayJob worker {g['groupName']}"] = g["template"]
    return out


def _run_path(path: str) -> str:
    return "/run" + path[len("/var/run"):] if path == "/var/run" or path.startswith("/var/run/") else path


# ---------------------------------------------------------------- Kubernetes

@pytest.mark.parametrize("name", sorted(_pod_templates()))
def test_no_volume_mount_covers_the_service_account_token_directory(name):
    pod = _pod_templates()[name]["spec"]
    if pod.get("automountServiceAccountToken") is False:
        return
    for c in pod["containers"] + pod.get("initContainers", []):
        for m in c.get("volumeMounts", []):
            mount = _run_path(m["mountPath"].rstrip("/"))
            assert not (SA_TOKEN_DIR + "/").startswith(mount + "/"), (
                f"{name}: {m['mountPath']} holds the service-account token mount point: the "
                "container cannot start (set automountServiceAccountToken: false)")


def test_the_serve_deployment_still_reads_its_token_where_the_configmap_says():
    """The fix keeps the token where dfscan serve reads it (the README's path)."""
    (dep,) = [d for d in _manifests() if d["kind"] == "Deployment"]
    (cm,) = [d for d in _manifests() if d["kind"] == "ConfigMap"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vol = next(v for v in pod["volumes"] if "secret" in v)
    path = f"{mounts[vol['name']]}/{vol['secret']['items'][0]['path']}"
    assert path == yaml.safe_load(cm["data"]["serve.yaml"])["api"]["token_file"] == "/run/secrets/dfscan_api_token"


def test_the_rayjob_cluster_requires_ray_token_authentication():
    (job,) = [d for d in _manifests() if d["kind"] == "RayJob"]
    cluster = job["spec"]["rayClusterSpec"]
    # the dashboard's job API listens on 0.0.0.0 (KubeRay's default too): it must require Ray's token
    assert cluster.get("authOptions", {}).get("mode") == "token"
    for name, tpl in _pod_templates().items():
        if name.startswith("RayJob"):
            for c in tpl["spec"]["containers"]:
                for e in c.get("env", []):  # a literal token would sit in the manifest and `kubectl describe`
                    assert not (e["name"] == "RAY_AUTH_TOKEN" and "value" in e), name


def test_each_serve_pod_is_annotated_for_scraping_once():
    pods = [t.get("metadata", {}) for t in _pod_templates().values()]
    pods = [m for m in pods if m.get("annotations", {}).get("prometheus.io/scrape") == "true"]
    assert pods  # the README's scrape annotations on the Deployment
    for svc in (d for d in _manifests() if d["kind"] == "Service"):
        selector = svc["spec"].get("selector", {})
        selects = [m for m in pods if selector.items() <= m.get("labels", {}).items()]
        annotated = svc["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
        assert not (selects and annotated), (
            f"Service {svc['metadata']['name']} and its pods are both annotated: scraped twice")


# ---------------------------------------------------------------- dashboard

def _dashboard_targets() -> list[dict]:
    dash = json.loads((DEPLOY / "grafana/dfscan.json").read_text())
    return [t for p in dash["panels"] for t in p.get("targets", [])]


def test_per_stream_dashboard_series_keep_their_instance():
    checked = 0
    for t in _dashboard_targets():
        for group in re.findall(r"\bby\s*\(([^)]*)\)", t["expr"]):
            labels = {x.strip() for x in group.split(",")}
            if "stream" in labels:
                checked += 1
                assert "instance" in labels, t["expr"]
                assert "{{instance}}" in t.get("legendFormat", ""), t
    assert checked >= 10


def _promtool_test(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    shutil.copy(DEPLOY / "prometheus/alerts.yml", tmp_path / "alerts.yml")
    spec = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run([PROMTOOL or "promtool", "test", "rules", "test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@needs_promtool
def test_two_instances_with_a_stream_of_the_same_name_stay_two_verdicts(tmp_path):
    verdict = next(t["expr"] for t in _dashboard_targets() if "dfscan_stream_fake" in t["expr"])
    out = _promtool_test(tmp_path, [{
        "interval": "1m",
        "input_series": [
            {"series": 'dfscan_stream_fake{job="dfscan-serve",instance="site-a:8787",stream="lobby"}', "values": "1x5"},
            {"series": 'dfscan_stream_fake{job="dfscan-serve",instance="site-b:8787",stream="lobby"}', "values": "0x5"},
        ],
        "promql_expr_test": [{"expr": verdict, "eval_time": "3m", "exp_samples": [
            {"labels": '{instance="site-a:8787",stream="lobby"}', "value": 1},
            {"labels": '{instance="site-b:8787",stream="lobby"}', "value": 0},
        ]}],
    }])
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- a scan killed while running

def _pushed_group(instance: str, state: str, push_times: str, interval_s: float) -> list[dict]:
    """The series the Pushgateway exposes for one scan's group (job dfscan_scan)."""
    lab = f'job="dfscan_scan",instance="{instance}"'
    series = [{"series": f'dfscan_scan_state{{{lab},state="{s}"}}', "values": f"{int(s == state)}x40"}
              for s in ("running", "complete", "failed", "interrupted")]
    return series + [{"series": f"push_time_seconds{{{lab}}}", "values": push_times},
                     {"series": f"dfscan_scan_push_interval_seconds{{{lab}}}", "values": f"{interval_s}x40"}]


@needs_promtool
def test_scan_failed_fires_for_a_scan_killed_while_running_and_only_for_it(tmp_path):
    series = (
        # pushed every 15 s (seen each minute here) until killed at 10 min: "running" for good
        _pushed_group("killed", "running", "0+60x10 600x30", 15)
        # still pushing at 30 min: a long scan, healthy
        + _pushed_group("busy", "running", "0+60x40", 15)
        # pushes every 10 min: 19 min since its last one is not yet 3 intervals
        + _pushed_group("slow", "running", "0x9 600x10 1200x20", 600)
        # finished cleanly at 10 min: the gateway keeps its last push, which said complete
        + _pushed_group("done", "complete", "0+60x10 600x30", 15)
    )
    lost = {"exp_labels": {"severity": "warning", "job": "dfscan_scan", "instance": "killed", "state": "lost"},
            "exp_annotations": {"summary": "the last scan on killed did not reach its end (lost): its counts "
                                           "are not the whole scan"}}
    out = _promtool_test(tmp_path, [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "DfscanScanFailed", "exp_alerts": []},  # all pushing
            {"eval_time": "12m", "alertname": "DfscanScanFailed", "exp_alerts": []},  # 2 min: not yet
            {"eval_time": "14m", "alertname": "DfscanScanFailed", "exp_alerts": [lost]},
            {"eval_time": "29m", "alertname": "DfscanScanFailed", "exp_alerts": [lost]},
        ],
    }])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture()
def gateway():
    exe = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if exe is None:
        pytest.skip("prometheus-pushgateway not installed (.ci/run installs it)")
    url = f"http://127.0.0.1:{free_port()}"
    # --persistence.file= : Debian's build defaults to /var/lib/prometheus/pushgateway.data, and
    # a gateway started here loaded every group an earlier test had pushed (interval 15 s included)
    proc = subprocess.Popen([exe, f"--web.listen-address={url[7:]}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready():
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert proc.poll() is None
            return False

    try:
        wait_for(ready, 20, what="pushgateway to start")
        time.sleep(0.5)  # a port taken meanwhile (another test's gateway) ends ours: not theirs answering
        assert proc.poll() is None, "pushgateway exited (port taken?)"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _gateway_samples(url: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
            for s in fam.samples if s.labels.get("job") == "dfscan_scan" and "state" not in s.labels}


def test_a_running_scan_pushes_its_push_interval(gateway):
    """What the alert compares push_time_seconds with is in every push, the first periodic one too."""
    from scanner import metrics, metrics_push

    before = {s.labels["state"]: s.value for s in metrics.SCAN_STATE.collect()[0].samples}
    metrics.set_scan_state("running")
    pusher = metrics_push.start_for(SimpleNamespace(metrics_push=gateway, metrics_push_interval_s=0.2,
                                                     metrics_push_instance=None))
    try:
        wait_for(lambda: "dfscan_scan_push_interval_seconds" in _gateway_samples(gateway), 10,
                 what="a periodic push")
        got = _gateway_samples(gateway)
        assert got["dfscan_scan_push_interval_seconds"] == 0.2
        assert abs(got["push_time_seconds"] - time.time()) < 30
    finally:
        pusher._stop.set()  # no final push: the scan "dies" here
        pusher._thread.join(5)
        metrics.PUSH_INTERVAL.set(0)
        for state, v in before.items():  # the registry is the process's: leave it as found
            metrics.SCAN_STATE.labels(state=state).set(v)
