"""The official Python client (`pip install kubernetes`) against k1s.

CRUD on ConfigMaps and a Deployment, a paginated list, a conflict, and a watch that must see
every change in order. Run by run.rs with KUBECONFIG pointing at a fresh server; prints one
line per check and exits non-zero on the first failure.
"""

import os
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "py-scenario"


def check(what, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (f": {detail}" if detail and not cond else ""))
    if not cond:
        sys.exit(1)


def main():
    config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    ns = core.read_namespace(NS)
    check("namespace is active", ns.status.phase == "Active", ns.status.phase)

    # A watch from the current resourceVersion, in a thread, before anything changes.
    start_rv = core.list_namespaced_config_map(NS).metadata.resource_version
    seen = []
    done = threading.Event()

    def watcher():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=start_rv,
                           timeout_seconds=20):
            # The root CA publisher's ConfigMap may arrive while the namespace is new.
            if ev["object"].metadata.name == "kube-root-ca.crt":
                continue
            seen.append((ev["type"], ev["object"].metadata.name,
                         (ev["object"].data or {}).get("v")))
            if ev["type"] == "DELETED" and ev["object"].metadata.name == "cm-2":
                w.stop()
        done.set()

    t = threading.Thread(target=watcher, daemon=True)
    t.start()

    # CRUD.
    for i in range(5):
        core.create_namespaced_config_map(NS, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"set": "py"}),
            data={"v": str(i)}))
    cm = core.read_namespaced_config_map("cm-1", NS)
    check("read returns what was created", cm.data == {"v": "1"} and cm.metadata.uid, cm)
    cm.data["v"] = "one"
    updated = core.replace_namespaced_config_map("cm-1", NS, cm)
    check("replace bumps the resourceVersion",
          updated.metadata.resource_version != cm.metadata.resource_version)
    try:
        core.replace_namespaced_config_map("cm-1", NS, cm)
        check("a stale replace is refused", False)
    except ApiException as e:
        check("a stale replace is refused with 409", e.status == 409, e.status)
    core.patch_namespaced_config_map("cm-0", NS, {"data": {"v": "zero"}})
    core.delete_namespaced_config_map("cm-2", NS)
    try:
        core.read_namespaced_config_map("cm-2", NS)
        check("a deleted object is gone", False)
    except ApiException as e:
        check("a deleted object is gone (404)", e.status == 404, e.status)

    # Pagination: 2 per page over the 4 left.
    names, cont, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(NS, label_selector="set=py", limit=2,
                                               _continue=cont)
        pages += 1
        names += [i.metadata.name for i in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    check("pagination returns every object once, in order",
          names == ["cm-0", "cm-1", "cm-3", "cm-4"] and pages == 2, (names, pages))

    # A typed workload with its defaults.
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="web", image="nginx:1.27")]))))
    apps.create_namespaced_deployment(NS, dep)
    got = apps.read_namespaced_deployment("web", NS)
    check("deployment defaults are set",
          got.spec.strategy.type == "RollingUpdate"
          and got.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent",
          got.spec)
    scale = apps.read_namespaced_deployment_scale("web", NS)
    check("the scale subresource reads", scale.spec.replicas == 2, scale)
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
    check("the scale subresource writes",
          apps.read_namespaced_deployment("web", NS).spec.replicas == 4)

    # The watch saw every change, in order.
    done.wait(20)
    want = [("ADDED", f"cm-{i}", str(i)) for i in range(5)] + [
        ("MODIFIED", "cm-1", "one"),
        ("MODIFIED", "cm-0", "zero"),
        ("DELETED", "cm-2", "2"),
    ]
    check("the watch saw every event in order", seen == want, seen)
    core.delete_namespace(NS)
    print("python client scenario passed")


if __name__ == "__main__":
    main()
