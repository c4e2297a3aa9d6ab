"""The ka.*/jevt.*/jmes.* field table against fields.md, on Falco trace events and inline events."""

from __future__ import annotations

from typing import Any

import pytest

from detector.errors import ConditionSyntaxError
from detector.event import AuditEvent
from detector.parse.extract import Value
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import ArgKind, FieldOptions
from tests.unit.eventkit import DROP, TRACES_DIR, make_event, pod_event, trace_event


def value(name: str, event: AuditEvent, arg: str | None = None, options: FieldOptions | None = None) -> Value:
    """Extract field `name` (with `arg`) from `event`."""
    return FIELDS[name].build(arg, options or FieldOptions())(event)


needs_traces = pytest.mark.skipif(
    not TRACES_DIR.is_dir(), reason=f"Falco k8s_audit trace files not found at {TRACES_DIR} (../shared is absent)")


# -- trace events -----------------------------------------------------------------------------


@needs_traces
def test_request_metadata_fields_on_exec_trace() -> None:
    """The scalar request fields of exec_pod.json read their JSON paths."""
    event = trace_event("exec_pod.json")
    assert value("ka.auditid", event) == "ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6"
    assert value("ka.stage", event) == "ResponseStarted"
    assert value("ka.level", event) == "Request"
    assert value("ka.auth.decision", event) == "allow"
    assert value("ka.auth.reason", event) == ""
    assert value("ka.user.name", event) == "minikube-user"
    assert value("ka.user.groups", event) == ("system:masters", "system:authenticated")
    assert value("ka.verb", event) == "create"
    assert value("ka.target.name", event) == "nginx-deployment-7998647bdf-phvq7"
    assert value("ka.target.namespace", event) == "default"
    assert value("ka.target.resource", event) == "pods"
    assert value("ka.target.subresource", event) == "exec"
    assert value("ka.response.code", event) == "101"
    assert value("ka.sourceips", event) == ("192.168.99.1",)
    assert value("ka.useragent", event) is None


@needs_traces
def test_uri_fields_on_exec_trace() -> None:
    """ka.uri.param takes the first value; ka.exec.command joins every command= value."""
    event = trace_event("exec_pod.json")
    assert value("ka.uri.param", event, "command") == "bash"
    assert value("ka.uri.param", event, "container") == "nginx1"
    assert value("ka.uri.param", event, "missing") is None
    assert value("ka.exec.command", event) == "bash"
    assert value("ka.target.pod.name", event) is None  # a subresource request


@needs_traces
def test_pod_fields_on_privileged_pod_trace() -> None:
    """The pod create trace yields container, response and pod-name fields."""
    event = trace_event("create_nginx_pod_privileged.json")
    assert value("ka.req.pod.containers.image", event) == ("nginx",)
    assert value("ka.req.pod.containers.image.repository", event) == ("nginx",)
    assert value("ka.req.pod.containers.privileged", event) == ("true",)
    assert value("ka.req.pod.containers.eff_run_as_user", event) == ("0",)
    assert value("ka.req.container.image", event) == "nginx"
    assert value("ka.req.container.privileged", event) == "true"
    assert value("ka.resp.name", event) == "nginx-deployment-5cdcc99dbf-rgw6z"
    assert value("ka.target.pod.name", event) == "nginx-deployment-5cdcc99dbf-rgw6z"
    assert value("ka.target.name", event) is None  # no objectRef.name on a create
    assert value("ka.req.pod.initContainers.image", event) is None


@needs_traces
def test_pod_fields_on_second_container_trace() -> None:
    """With two containers, per-container fields have one value each (nils skipped)."""
    event = trace_event("create_nginx_pod_privileged_2nd_container.json")
    images = value("ka.req.pod.containers.image", event)
    assert isinstance(images, tuple) and len(images) == 2
    assert "true" in (value("ka.req.pod.containers.privileged", event) or ())
    assert value("ka.req.container.privileged", event) == "true"


@needs_traces
def test_volume_fields_on_sensitive_mount_trace() -> None:
    """hostPath volumes show up in the volume fields and the deprecated hostpath check."""
    event = trace_event("create_nginx_pod_sensitive_mount.json")
    assert value("ka.req.pod.volumes.hostpath", event) == ("/etc",)
    assert value("ka.req.pod.volumes.volume_type", event) == ("hostPath",)
    assert value("ka.req.volume.hostpath", event, "/etc") == "true"
    assert value("ka.req.volume.hostpath", event, "/et*") == "true"
    assert value("ka.req.volume.hostpath", event, "/proc*") == "false"


@needs_traces
def test_host_network_trace() -> None:
    """hostNetwork: true is the text `true` in both the pod and the deprecated field."""
    event = trace_event("create_nginx_pod_hostnetwork.json")
    assert value("ka.req.pod.host_network", event) == "true"
    assert value("ka.req.container.host_network", event) == "true"
    assert value("ka.req.pod.host_pid", event) is None


@needs_traces
def test_binding_fields_on_clusterrolebinding_trace() -> None:
    """Subjects print as compact JSON in their original key order; role is roleRef.name."""
    event = trace_event("create_clusterrolebinding.json")
    assert value("ka.req.binding.subjects", event) == (
        '{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"minikube"}',)
    assert value("ka.req.binding.subjects.user_names", event) == ("minikube",)
    assert value("ka.req.binding.subjects.group_names", event) is None
    assert value("ka.req.binding.role", event) == "system:basic-user"
    assert value("ka.req.binding.subject.has_name", event, "anything") == "true"
    assert value("ka.target.apigroup", event) == "rbac.authorization.k8s.io"


@needs_traces
def test_role_fields_on_wildcard_role_trace() -> None:
    """Role rule fields flatten over every rule; an index selects one rule."""
    event = trace_event("create_cluster_role_wildcard_resources.json")
    assert value("ka.req.role.rules.resources", event) == ("*",)
    assert value("ka.req.role.rules.verbs", event) == ("get", "list", "get")
    assert value("ka.req.role.rules.verbs", event, "1") == ("get",)
    assert value("ka.req.role.rules.apiGroups", event) == ("",)
    nonresource = value("ka.req.role.rules.nonResourceURLs", event)
    assert isinstance(nonresource, tuple) and "/healthz" in nonresource
    rules = value("ka.req.role.rules", event)
    assert isinstance(rules, tuple) and rules[0] == '{"apiGroups":[""],"resources":["*"],"verbs":["get","list"]}'


@needs_traces
def test_configmap_fields_keep_json_escapes() -> None:
    """ka.req.configmap.obj is the data object as compact JSON, `\\n` still escaped."""
    event = trace_event("create_configmap_sensitive_values.json")
    assert value("ka.req.configmap.name", event) == "my-config"
    data = value("ka.req.configmap.obj", event)
    assert isinstance(data, str)
    assert data.startswith('{"access.properties":"aws_access_key_id = MY-ID\\naws_secret_access_key')


@needs_traces
def test_service_fields_on_nodeport_trace() -> None:
    """Service type and one JSON value per port."""
    event = trace_event("create_nginx_service_nodeport.json")
    assert value("ka.req.service.type", event) == "NodePort"
    assert value("ka.req.service.ports", event) == ('{"nodePort":30080,"port":80,"protocol":"TCP","targetPort":80}',)


@needs_traces
def test_json_fields_on_trace() -> None:
    """jevt.value pointers with ~1 escapes, and jevt.rawtime in nanoseconds."""
    event = trace_event("exec_pod.json")
    assert value("jevt.value", event, "/annotations/authorization.k8s.io~1decision") == "allow"
    assert value("jevt.value", event, "/stage") == "ResponseStarted"
    assert value("jevt.value", event, "/responseStatus/code") == "101"
    assert value("jevt.value", event, "/a~1~0b") is None
    assert value("jevt.rawtime", event) == "1540561114902914000"
    assert value("json.rawtime", event) == "1540561114902914000"


# -- inline: simple request fields ----------------------------------------------------------


def test_missing_paths_are_absent() -> None:
    """Fields whose JSON path is missing are None, not `<NA>` or ''."""
    event = make_event(objectRef=DROP, responseStatus=DROP, userAgent=DROP, annotations=DROP)
    for name in ("ka.target.name", "ka.target.namespace", "ka.target.resource", "ka.response.code",
                 "ka.response.reason", "ka.useragent", "ka.auth.decision", "ka.cluster.name", "ka.impuser.name",
                 "ka.impuser.groups", "ka.resp.name", "ka.req.binding.role", "ka.req.pod.host_ipc"):
        assert value(name, event) is None, name


def test_impersonation_and_level_fields() -> None:
    """ka.impuser.* read impersonatedUser; ka.level reads level."""
    event = make_event(impersonatedUser={"username": "bob", "groups": ["g1", "g2"]}, level="Metadata")
    assert value("ka.impuser.name", event) == "bob"
    assert value("ka.impuser.groups", event) == ("g1", "g2")
    assert value("ka.level", event) == "Metadata"


def test_annotation_fields() -> None:
    """Annotation-backed fields read their exact annotation keys."""
    event = make_event(annotations={
        "authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": "nope", "cluster_name": "c1",
        "pod-security.kubernetes.io/audit-violations": "v", "authentication.openshift.io/username": "u"})
    assert value("ka.auth.decision", event) == "forbid"
    assert value("ka.auth.reason", event) == "nope"
    assert value("ka.cluster.name", event) == "c1"
    assert value("ka.security.pod.violations", event) == "v"
    assert value("ka.auth.openshift.username", event) == "u"


def test_non_string_values_are_json_text() -> None:
    """JSON numbers and booleans become their text; objects compact JSON."""
    event = pod_event({"hostNetwork": True, "hostPID": False,
                       "securityContext": {"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [1, 2]},
                       "containers": [{"name": "a", "image": "a"}]})
    assert value("ka.req.pod.host_network", event) == "true"
    assert value("ka.req.pod.host_pid", event) == "false"
    assert value("ka.req.pod.run_as_user", event) == "1000"
    assert value("ka.req.pod.fs_group", event) == "2000"
    assert value("ka.req.pod.supplemental_groups", event) == ("1", "2")


def test_target_pod_name_needs_pods_without_subresource() -> None:
    """ka.target.pod.name is the response name only for `pods` with no subresource."""
    response = {"metadata": {"name": "web-1"}}
    plain = make_event(objectRef={"resource": "pods"}, responseObject=response)
    logs = make_event(objectRef={"resource": "pods", "subresource": "log"}, responseObject=response)
    secret = make_event(objectRef={"resource": "secrets"}, responseObject=response)
    assert value("ka.target.pod.name", plain) == "web-1"
    assert value("ka.target.pod.name", logs) is None
    assert value("ka.target.pod.name", secret) is None
    assert value("ka.resp.name", secret) == "web-1"


def test_source_ips_read_top_level_source_ips() -> None:
    """ka.sourceips reads the event's sourceIPs (upstream reads a wrong path); an index picks one."""
    event = make_event(sourceIPs=["1.1.1.1", "10.0.0.1"])
    assert value("ka.sourceips", event) == ("1.1.1.1", "10.0.0.1")
    assert value("ka.sourceips", event, "1") == ("10.0.0.1",)
    assert value("ka.sourceips", event, "2") is None
    assert value("ka.sourceip.first", event) == "1.1.1.1"
    assert value("ka.sourceip.last", event) == "10.0.0.1"
    assert value("ka.sourceips", make_event(sourceIPs=[])) is None


@pytest.mark.parametrize(
    ("ips", "trusted", "arg", "expected"),
    [
        (["203.0.113.9"], 0, None, "203.0.113.9"),
        (["203.0.113.9", "10.0.0.2"], 0, None, "10.0.0.2"),
        (["203.0.113.9", "10.0.0.2"], 1, None, "203.0.113.9"),
        (["198.51.100.1", "203.0.113.9", "10.0.0.2"], 1, None, "203.0.113.9"),
        (["203.0.113.9", "10.0.0.2"], 5, None, "203.0.113.9"),
        (["203.0.113.9", "10.0.0.2"], 0, "1", "203.0.113.9"),
        (["203.0.113.9", "10.0.0.2"], 1, "0", "10.0.0.2"),
    ],
)
def test_client_ip_skips_trusted_proxies(ips: list[str], trusted: int, arg: str | None, expected: str) -> None:
    """ka.client.ip is the address before the last N (trusted proxies), never past the first."""
    event = make_event(sourceIPs=ips)
    assert value("ka.client.ip", event, arg, FieldOptions(trusted_proxies=trusted)) == expected


def test_client_ip_without_source_ips_is_absent() -> None:
    """No sourceIPs, no client address."""
    assert value("ka.client.ip", make_event(sourceIPs=DROP)) is None


@pytest.mark.parametrize(
    ("uri", "param", "expected"),
    [
        ("/x?command=ls&command=-l", "command", "ls"),
        ("/x?container=a+b", "container", "a b"),
        ("/x?path=%2Fetc%2Fpasswd", "path", "/etc/passwd"),
        ("/x?flag", "flag", ""),
        ("/x?a=1;b=2", "a", None),
        ("/x?a=%zz", "a", None),
        ("/x?a=1", "b", None),
        ("/x", "a", None),
    ],
)
def test_uri_param(uri: str, param: str, expected: str | None) -> None:
    """First value, `+` as space, percent-decoded; `;` or a bad escape make it absent (Go's rules)."""
    assert value("ka.uri.param", make_event(requestURI=uri), param) == expected


def test_exec_command_joins_and_masks() -> None:
    """ka.exec.command joins every command= value and masks credentials."""
    uri = ("/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=curl%20--token%3Dabc%20http://x"
           "&container=c")
    assert value("ka.exec.command", make_event(requestURI=uri)) == "sh -c curl --token=**** http://x"
    assert value("ka.exec.command", make_event(requestURI="/api/v1/pods")) is None


# -- inline: container families --------------------------------------------------------------

FAMILIES = ("containers", "initContainers", "ephemeralContainers")


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_reads_only_its_own_list(family: str) -> None:
    """ka.req.pod.<family>.image reads spec.<family> and no other list."""
    spec: dict[str, Any] = {name: [{"name": name[:4], "image": f"{name}:1"}] for name in FAMILIES}
    event = pod_event(spec)
    assert value(f"ka.req.pod.{family}.image", event) == (f"{family}:1",)
    assert value(f"ka.req.pod.{family}.name", event) == (family[:4],)
    assert value(f"ka.req.pod.{family}.image.repository", event) == (family,)


def test_ephemeral_containers_have_no_host_port() -> None:
    """host_port exists for containers and initContainers only."""
    assert "ka.req.pod.containers.host_port" in FIELDS
    assert "ka.req.pod.initContainers.host_port" in FIELDS
    assert "ka.req.pod.ephemeralContainers.host_port" not in FIELDS


def test_missing_image_or_name_makes_the_field_absent() -> None:
    """One container without `image` (or `name`) makes the whole field absent."""
    event = pod_event({"containers": [{"name": "a", "image": "nginx"}, {"name": "b"}, {"image": "redis"}]})
    assert value("ka.req.pod.containers.image", event) is None
    assert value("ka.req.pod.containers.name", event) is None
    assert value("ka.req.pod.containers.image", event, "0") == ("nginx",)
    assert value("ka.req.pod.containers.image", event, "2") == ("redis",)


def test_index_out_of_range_is_absent() -> None:
    """An index past the last container gives an absent field."""
    event = pod_event({"containers": [{"name": "a", "image": "nginx"}]})
    assert value("ka.req.pod.containers.image", event, "1") is None
    assert value("ka.req.pod.containers.command", event, "3") is None


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("registry:5000/app:1", "registry:5000/app"),
        ("registry:5000/app", "registry:5000/app"),
        ("nginx@sha256:0123abcd", "nginx"),
        ("registry:5000/team/app:2@sha256:0123abcd", "registry:5000/team/app"),
        ("docker.io/falcosecurity/falco:0.37", "docker.io/falcosecurity/falco"),
    ],
)
def test_image_repository_strips_tag_and_digest_keeping_ports(image: str, repository: str) -> None:
    """image.repository removes the tag and digest but keeps a registry port."""
    event = pod_event({"containers": [{"name": "c", "image": image}]})
    assert value("ka.req.pod.containers.image.repository", event) == (repository,)
    assert value("ka.req.container.image.repository", event) == repository


def test_command_and_args_are_joined_per_container() -> None:
    """Each container's command/args array is joined with spaces; containers without are skipped."""
    event = pod_event({"containers": [
        {"name": "a", "image": "a", "command": ["sh", "-c", "sleep 1"], "args": ["x"]},
        {"name": "b", "image": "b"},
        {"name": "c", "image": "c", "command": ["run"]},
    ]})
    assert value("ka.req.pod.containers.command", event) == ("sh -c sleep 1", "run")
    assert value("ka.req.pod.containers.args", event) == ("x",)
    assert value("ka.req.pod.containers.command", event, "2") == ("run",)


def test_command_that_is_not_a_string_array_is_absent() -> None:
    """A `command` that is not an array of strings makes the field absent."""
    event = pod_event({"containers": [{"name": "a", "image": "a", "command": "sh -c x"}]})
    assert value("ka.req.pod.containers.command", event) is None


def test_security_context_fields_skip_containers_without_the_key() -> None:
    """privileged/run_as_user/... list only containers that set the key."""
    event = pod_event({"initContainers": [
        {"name": "a", "image": "a", "securityContext": {"privileged": True, "runAsUser": 0,
                                                         "allowPrivilegeEscalation": False,
                                                         "readOnlyRootFilesystem": True, "procMount": "Unmasked"}},
        {"name": "b", "image": "b", "securityContext": {"privileged": False, "runAsGroup": 5}},
        {"name": "c", "image": "c"},
    ]})
    family = "ka.req.pod.initContainers"
    assert value(f"{family}.privileged", event) == ("true", "false")
    assert value(f"{family}.run_as_user", event) == ("0",)
    assert value(f"{family}.run_as_group", event) == ("5",)
    assert value(f"{family}.allow_privilege_escalation", event) == ("false",)
    assert value(f"{family}.read_only_fs", event) == ("true",)
    assert value(f"{family}.proc_mount", event) == ("Unmasked",)
    assert value(f"{family}.privileged", event, "2") is None


def test_effective_run_as_user_reads_security_contexts() -> None:
    """eff_run_as_user: container securityContext, else the pod's, else "0" — one value per container."""
    event = pod_event({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
        "containers": [
            {"name": "a", "image": "a", "securityContext": {"runAsUser": 2000}},
            {"name": "b", "image": "b"},
            {"name": "c", "image": "c", "runAsUser": 7},  # not a securityContext: ignored
        ],
    })
    assert value("ka.req.pod.containers.eff_run_as_user", event) == ("2000", "1000", "1000")
    assert value("ka.req.pod.containers.eff_run_as_group", event) == ("3000", "3000", "3000")
    bare = pod_event({"containers": [{"name": "a", "image": "a"}]})
    assert value("ka.req.pod.containers.eff_run_as_user", bare) == ("0",)
    assert value("ka.req.pod.containers.eff_run_as_group", bare) == ("0",)
    assert value("ka.req.pod.containers.eff_run_as_user", pod_event({})) is None


def test_add_capabilities_yields_one_value_per_capability() -> None:
    """Capabilities added by every container are flattened, one value each."""
    event = pod_event({"containers": [
        {"name": "a", "image": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}}},
        {"name": "b", "image": "b"},
        {"name": "c", "image": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]}}},
    ]})
    assert value("ka.req.pod.containers.add_capabilities", event) == ("NET_ADMIN", "SYS_TIME", "SYS_ADMIN")
    assert value("ka.req.pod.containers.add_capabilities", event, "2") == ("SYS_ADMIN",)
    assert value("ka.req.pod.containers.add_capabilities", event, "1") is None


def test_host_port_prefers_host_port_over_container_port() -> None:
    """host_port lists hostPort, else containerPort, for every port of every container."""
    event = pod_event({"containers": [
        {"name": "a", "image": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 443}]},
        {"name": "b", "image": "b"},
    ]})
    assert value("ka.req.pod.containers.host_port", event) == ("8080", "443")
    broken = pod_event({"containers": [{"name": "a", "image": "a", "ports": "80"}]})
    assert value("ka.req.pod.containers.host_port", broken) is None


def test_deprecated_container_fields_use_the_first_container() -> None:
    """ka.req.container.image is the first container's; privileged is true if any is."""
    event = pod_event({"containers": [
        {"name": "a", "image": "first:1"},
        {"name": "b", "image": "second", "securityContext": {"privileged": True}},
    ]})
    assert value("ka.req.container.image", event) == "first:1"
    assert value("ka.req.container.privileged", event) == "true"
    assert value("ka.req.container.privileged", pod_event({"containers": [{"name": "a", "image": "a"}]})) == "false"
    assert value("ka.req.container.privileged", pod_event({})) is None


# -- inline: volumes, services, bindings ----------------------------------------------------


def test_volume_fields() -> None:
    """hostPath paths, flexVolume drivers and volume types (every key but name, in order)."""
    event = pod_event({"volumes": [
        {"name": "a", "hostPath": {"path": "/proc/1"}},
        {"name": "b", "configMap": {"name": "cm"}},
        {"name": "c", "flexVolume": {"driver": "vendor/drv"}},
    ]})
    assert value("ka.req.pod.volumes.hostpath", event) == ("/proc/1",)
    assert value("ka.req.pod.volumes.flexvolume_driver", event) == ("vendor/drv",)
    assert value("ka.req.pod.volumes.volume_type", event) == ("hostPath", "configMap", "flexVolume")
    assert value("ka.req.pod.volumes.volume_type", event, "1") == ("configMap",)
    assert value("ka.req.volume.hostpath", event, "/proc*") == "true"
    assert value("ka.req.volume.hostpath", event, "/proc") == "false"


def test_volume_hostpath_without_volumes_is_absent() -> None:
    """The deprecated hostpath check is absent when the pod has no volumes."""
    assert value("ka.req.volume.hostpath", pod_event({"containers": []}), "/proc*") is None


def test_service_ports_yield_one_json_value_per_port() -> None:
    """Each port is its own value (upstream returns the whole array once); an index picks one."""
    event = make_event(requestObject={"spec": {"type": "ClusterIP", "ports": [{"port": 80}, {"port": 443}]}})
    assert value("ka.req.service.ports", event) == ('{"port":80}', '{"port":443}')
    assert value("ka.req.service.ports", event, "1") == ('{"port":443}',)
    assert value("ka.req.service.type", event) == "ClusterIP"


def test_binding_subject_names_by_kind() -> None:
    """Subject name fields filter by kind; namespace:name skips subjects without a namespace."""
    event = make_event(requestObject={"roleRef": {"name": "admin"}, "subjects": [
        {"kind": "User", "name": "alice"},
        {"kind": "Group", "name": "devs"},
        {"kind": "ServiceAccount", "name": "sa1", "namespace": "ns1"},
        {"kind": "ServiceAccount", "name": "sa2"},
        {"kind": "User"},
    ]})
    assert value("ka.req.binding.subjects.user_names", event) == ("alice",)
    assert value("ka.req.binding.subjects.group_names", event) == ("devs",)
    assert value("ka.req.binding.subjects.serviceaccount_names", event) == ("sa1", "sa2")
    assert value("ka.req.binding.subjects.serviceaccount_ns_names", event) == ("ns1:sa1",)
    assert value("ka.req.binding.role", event) == "admin"
    assert value("ka.req.binding.subjects.user_names", make_event(requestObject={"subjects": {}})) is None


def test_role_rules_index_selects_one_rule() -> None:
    """An index on a role rule field restricts it to that rule."""
    event = make_event(requestObject={"rules": [{"verbs": ["get"], "resources": ["pods"]},
                                                {"verbs": ["*"], "resources": ["pods/exec"]}]})
    assert value("ka.req.role.rules.resources", event) == ("pods", "pods/exec")
    assert value("ka.req.role.rules.verbs", event, "1") == ("*",)
    assert value("ka.req.role.rules.verbs", event, "2") is None


# -- inline: json / jmes / time -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/requestObject/spec/containers/0/image", "nginx"),
        ("/requestObject/spec/containers/1/image", None),
        ("/requestObject/spec/containers/x", None),
        ("/requestObject/metadata/annotations/a~1b", "slash"),
        ("/requestObject/metadata/annotations/t~0x", "tilde"),
        ("/requestObject/metadata/annotations/t~01", "tilde-one"),
        ("/requestObject/spec/hostPID", "true"),
        ("/requestObject/spec/nothing", "null"),
        ("/requestObject/metadata/labels", '{"app":"web","tier":"1"}'),
        ("/responseStatus/code", "201"),
        ("/", None),
        ("/missing/deeper", None),
        ("/stage", "ResponseComplete"),
        ("/annotations/authorization.k8s.io~1decision", None),
    ],
)
def test_json_pointer(pointer: str, expected: str | None) -> None:
    """RFC 6901: ~1 is '/', ~0 is '~' (in that order), array indexes, missing is absent."""
    event = make_event(requestObject={
        "metadata": {"annotations": {"a/b": "slash", "t~x": "tilde", "t~1": "tilde-one"},
                     "labels": {"app": "web", "tier": "1"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}], "hostPID": True, "nothing": None},
    })
    assert value("jevt.value", event, pointer) == expected
    assert value("json.value", event, pointer) == expected


def test_json_pointer_empty_is_the_whole_event() -> None:
    """An empty pointer returns the whole document as compact JSON."""
    event = make_event(verb="get")
    whole = value("jevt.value", event, "")
    assert isinstance(whole, str) and whole.startswith('{"kind":"Event"') and '"verb":"get"' in whole


@pytest.mark.parametrize(
    ("timestamp", "nanos"),
    [
        ("2018-10-26T13:38:34.902914Z", "1540561114902914000"),
        ("2024-05-01T12:00:00.123456789Z", "1714564800123456789"),
        ("2024-05-01T12:00:00Z", "1714564800000000000"),
        ("2024-05-01T14:00:00.5+02:00", "1714564800500000000"),
    ],
)
def test_rawtime_is_nanoseconds_since_epoch(timestamp: str, nanos: str) -> None:
    """jevt.rawtime keeps all nine fraction digits of stageTimestamp and honours offsets."""
    event = make_event(stageTimestamp=timestamp)
    assert value("jevt.rawtime", event) == nanos
    assert value("evt.rawtime", event) == nanos


def test_iso8601_time_is_utc() -> None:
    """evt.time.iso8601 is printed in UTC with nine fraction digits, whatever the input offset."""
    event = make_event(stageTimestamp="2024-05-01T14:00:00.5+02:00")
    assert value("evt.time.iso8601", event) == "2024-05-01T12:00:00.500000000Z"


def test_jmes_value_and_values() -> None:
    """jmes.value renders one result (strings as text, others JSON); jmes.values is a list field."""
    event = pod_event({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}],
                       "nothing": None})
    assert value("jmes.value", event, "requestObject.spec.containers[0].image") == "nginx"
    assert value("jmes.value", event, "requestObject.spec.containers[*].name") == '["a","b"]'
    assert value("jmes.values", event, "requestObject.spec.containers[*].image") == ("nginx", "redis")
    assert value("jmes.values", event, "verb") == ("create",)
    assert value("jmes.value", event, "requestObject.spec.nothing") is None
    assert value("jmes.value", event, "requestObject.spec.containers[?name=='z']") is None
    assert value("jmes.values", event, "requestObject.spec.containers[?name=='z'].image") is None


def test_invalid_jmespath_is_rejected_when_built() -> None:
    """A JMESPath expression that does not compile fails when the field is built."""
    with pytest.raises(ConditionSyntaxError):
        FIELDS["jmes.value"].build("a[[", FieldOptions())


# -- the table itself ------------------------------------------------------------------------


def test_every_field_extracts_without_error_on_a_bare_event() -> None:
    """Every field (with a plausible argument) yields None, text or a non-empty tuple of text."""
    event = make_event()
    for name, spec in FIELDS.items():
        arg = {ArgKind.KEY: "x", ArgKind.INDEX: None, ArgKind.NONE: None}[spec.arg]
        if name.startswith("jmes."):
            arg = "verb"
        result = value(name, event, arg)
        assert result is None or isinstance(result, str) or (
            isinstance(result, tuple) and result and all(isinstance(v, str) for v in result)), name
        assert not (isinstance(result, tuple) and not spec.is_list), name
