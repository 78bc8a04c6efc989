"""The job, tenant and priority-class documents (YAML), validated with JSON Schema.

A job is a gang in the spirit of Volcano's Job and Kubeflow's MPIJob (docs/jobs.md)::

    name: bert-large
    tenant: nlp
    priority_class: high          # or priority: 100
    tasks:
      - {name: launcher, replicas: 1, image: host, command: [python3, launch.py],
         resources: {cpu: 1, memory: 1Gi}}
      - {name: worker, replicas: 4, image: host, command: [python3, train.py],
         resources: {gpus: 8, gpu_type: H100, cpu: 16, memory: 64Gi, rdma: true}}
    topology: {mode: required, level: rack}
    max_run_s: 86400
    restart_policy: OnFailure
    max_restarts: 3
    checkpoint_dir: /ckpt/bert-large
    ttl_seconds_after_finished: 3600   # keys deleted an hour after it ends (scheduler.job_gc)
    depends_on: [{job: bert-prep}]     # runs once bert-prep has Succeeded (scheduler.dependencies)
    # suspend: true                    # stored suspended: runs after jobctl resume
    # array: "0-15%4"                  # a job array: 16 jobs bert-large_0.., 4 at a time (scheduler.arrays)

``validate_job(doc)`` returns every problem at once, each with its path
(``tasks[1].resources.gpus: must be >= 0``), from ``jsonschema`` plus the few rules a schema
cannot say (one GPU shape per gang). ``to_model(spec)`` gives the ``scheduler.model.Job`` the
core places; ``task_names(spec)`` the task instances (``worker-0`` ...).

Tasks with GPUs must all ask for the same resources (the core places uniform gangs); tasks
without GPUs (a launcher) run on the node of the first GPU task, as MPI Operator's
``runLauncherAsWorker``; their CPU and memory are not accounted by the core.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import yaml

from agent.labels import label_problem
from agent.strict_yaml import StrictLoader
from scheduler import arrays
from scheduler.decode import finite_number, too_large
from scheduler.decode import shown as shown_value
from scheduler.model import Job, Level, Mode, Topology

__all__ = [
    "JOB_SCHEMA",
    "MAX_DEPENDENCIES",
    "MAX_QUANTITY",
    "PRIORITY_CLASS_SCHEMA",
    "TENANT_SCHEMA",
    "Problem",
    "ValidationFailed",
    "STORED_JOB_SCHEMA",
    "check_stored_job",
    "cpu_milli",
    "elastic_run_size",
    "load_documents",
    "memory_mib",
    "normalize_job",
    "task_instances",
    "to_model",
    "validate_job",
    "validate_priority_class",
    "validate_tenant",
]

# Patterns end in \Z, not $: jsonschema matches with re.search, and Python's $ also matches
# before a final newline (a name "j\n" passed, and memory "4Gi\n" then failed to convert).
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?\Z"}
MAX_NAME = 63  # (the pattern's length bound: a longer name is told so, not that it does not match)
_NAME_ANY_LENGTH = r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?"
QUANTITY_CPU = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?m?\Z"}]}
QUANTITY_MEM = {"anyOf": [{"type": "integer", "minimum": 0},
                          {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?\Z"}]}

# scheduler/dependencies.py: run only after these jobs end (Slurm's --dependency=afterok / afterany)
MAX_DEPENDENCIES = 16
DEPENDENCY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["job"],
    "properties": {"job": NAME, "condition": {"enum": ["succeeded", "finished"]}},
}

RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "gpus": {"type": "integer", "minimum": 0, "maximum": 64},
        "gpu_type": {"type": "string", "minLength": 1},
        "cpu": QUANTITY_CPU,
        "memory": QUANTITY_MEM,
        "rdma": {"type": "boolean"},
    },
}

TASK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "command"],
    "properties": {
        "name": NAME,
        "replicas": {"type": "integer", "minimum": 1, "maximum": 1024},
        "image": {"type": "string", "minLength": 1},
        "command": {"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "minItems": 1, "items": {"type": "string"}}]},
        "env": {"type": "object", "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*\Z"},
                "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "workdir": {"type": "string"},
        "resources": RESOURCES,
    },
}

JOB_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kvraft job",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "tasks"],
    "properties": {
        "kind": {"const": "Job"},
        "name": NAME,
        "tenant": NAME,
        "priority": {"type": "integer", "minimum": -1000000, "maximum": 1000000},
        "priority_class": NAME,
        "tasks": {"type": "array", "minItems": 1, "maxItems": 16, "items": TASK},
        "min_available": {"type": "integer", "minimum": 1},
        "topology": {
            "type": "object", "additionalProperties": False, "required": ["level"],
            "properties": {"mode": {"enum": ["required", "preferred"]},
                           "level": {"enum": ["node", "rack", "spine"]},
                           "fewest_nodes": {"type": "boolean"}},
        },
        "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
        "max_run_s": {"type": "number", "exclusiveMinimum": 0},
        "estimate_s": {"type": "number", "exclusiveMinimum": 0},
        "preemptible": {"type": "boolean"},
        "restart_policy": {"enum": ["Never", "OnFailure"]},
        "max_restarts": {"type": "integer", "minimum": 0, "maximum": 100},
        "checkpoint_dir": {"type": "string", "minLength": 1},
        "checkpoint_interval_s": {"type": "number", "exclusiveMinimum": 0},
        "grace_s": {"type": "number", "minimum": 0, "maximum": 3600},
        "ttl_seconds_after_finished": {"type": "number", "minimum": 0},
        "depends_on": {"type": "array", "maxItems": MAX_DEPENDENCIES, "items": DEPENDENCY},
        # a job array (scheduler.arrays): Slurm's --array syntax, "0-15%4"
        "array": {"type": "string", "minLength": 1},
        # submitted suspended (Kubernetes' Job .spec.suspend, sbatch --hold): jobctl resume runs it
        "suspend": {"type": "boolean"},
    },
}

TENANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "name", "nominal_gpus"],
    "properties": {
        "kind": {"const": "Tenant"},
        "name": NAME,
        "nominal_gpus": {"type": "integer", "minimum": 0},
        "borrow_limit_gpus": {"type": ["integer", "null"], "minimum": 0},
        # scheduler/admission.py: names of this tenant's jobs start with it (and only theirs do)
        "job_name_prefix": {"type": ["string", "null"], "pattern": r"^[a-z0-9][-a-z0-9_.]{0,61}\Z"},
        "max_priority": {"type": ["integer", "null"], "minimum": -1000000, "maximum": 1000000},
        # the uid and gid its tasks run as on the nodes (spec.user of its assignments); else root
        "run_as_user": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967294},
        "run_as_group": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967294},
        "description": {"type": "string"},
    },
}

PRIORITY_CLASS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "name", "value"],
    "properties": {
        "kind": {"const": "PriorityClass"},
        "name": NAME,
        "value": {"type": "integer", "minimum": -1000000, "maximum": 1000000},
        "preemptible": {"type": "boolean"},
        "description": {"type": "string"},
    },
}

# The largest milli-CPU or MiB a stored task may ask for (an int64): a job's cpu or memory
# beyond it is refused at submit (validate_job), as the daemon refuses it stored.
MAX_QUANTITY = (1 << 63) - 1

STORED_TASK: dict[str, Any] = {
    "type": "object",
    "required": ["name", "replicas", "image", "command", "resources"],
    "properties": {
        "name": NAME,
        "replicas": {"type": "integer", "minimum": 1, "maximum": 1024},
        "image": {"type": "string", "minLength": 1},
        "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "workdir": {"type": "string"},
        "resources": {
            "type": "object",
            "required": ["gpus", "cpu_milli", "memory_mib", "rdma"],
            "properties": {
                "gpus": {"type": "integer", "minimum": 0, "maximum": 64},
                "gpu_type": {"type": ["string", "null"]},
                "cpu_milli": {"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY},
                "memory_mib": {"type": "integer", "minimum": 0, "maximum": MAX_QUANTITY},
                "rdma": {"type": "boolean"},
            },
        },
    },
}

# The stored (normalized) job, as the daemon reads it from /registry/jobs/<job>: what
# ``normalize_job`` writes. Fields it does not know are allowed (a newer writer); the optional
# ones may be missing (an older one). Anyone may write the key, so the daemon checks it.
STORED_JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "tenant", "priority", "tasks"],
    "properties": {
        "kind": {"const": "Job"},
        "name": NAME,
        "tenant": NAME,
        "priority": {"type": "integer", "minimum": -1000000, "maximum": 1000000},
        "priority_class": {"type": ["string", "null"]},
        "tasks": {"type": "array", "minItems": 1, "maxItems": 16, "items": STORED_TASK},
        "topology": {
            "type": ["object", "null"], "required": ["level", "mode"],
            "properties": {"mode": {"enum": ["required", "preferred"]},
                           "level": {"enum": ["node", "rack", "spine"]},
                           "fewest_nodes": {"type": "boolean"}},
        },
        "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
        "max_run_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "estimate_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "preemptible": {"type": "boolean"},
        "restart_policy": {"enum": ["Never", "OnFailure"]},
        "max_restarts": {"type": "integer", "minimum": 0, "maximum": 100},
        "checkpoint_dir": {"type": ["string", "null"]},
        "checkpoint_interval_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "grace_s": {"type": "number", "minimum": 0, "maximum": 3600},
        "ttl_seconds_after_finished": {"type": ["number", "null"]},
        "submitted_at": {"type": "number"},
        "cancelled": {"type": "boolean"},
        "suspend": {"type": "boolean"},  # jobctl suspend / resume: not run while true
        "min_available": {"type": ["integer", "null"], "minimum": 1},  # elastic: fewer tasks than replicas may start
        "depends_on": {"type": "array", "maxItems": MAX_DEPENDENCIES,
                       "items": {"type": "object", "required": ["job", "condition"],
                                 "properties": {"job": NAME, "condition": {"enum": ["succeeded", "finished"]}}}},
        # an element of a job array (scheduler.arrays.record_ok checks it and the name)
        "array": {"type": ["object", "null"], "required": ["job", "index", "count", "parallelism"],
                  "additionalProperties": False,
                  "properties": {"job": NAME, "index": {"type": "integer", "minimum": 0, "maximum": 9999},
                                 "count": {"type": "integer", "minimum": 1, "maximum": 1000},
                                 "parallelism": {"type": ["integer", "null"], "minimum": 1}}},
    },
}


def _is_integer(checker: Any, instance: Any) -> bool:
    """An int, not a bool; not 2.0 either (jsonschema's integer takes 2.0, which range() refuses);
    nor one too large for a float (every integer field has a bound far below)."""
    return isinstance(instance, int) and finite_number(instance)


def _is_number(checker: Any, instance: Any) -> bool:
    """A finite int or float: YAML's .nan and .inf (and JSON's NaN) are not numbers here, nor an
    int too large for a float (math.isfinite raised OverflowError on it)."""
    return finite_number(instance)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}))
_VALIDATORS = {id(s): _Validator(s) for s in (JOB_SCHEMA, TENANT_SCHEMA, PRIORITY_CLASS_SCHEMA, STORED_JOB_SCHEMA)}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ValidationFailed(ValueError):
    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{what}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _message(err: jsonschema.ValidationError) -> tuple[list[Any], str]:
    path = list(err.absolute_path)
    v, val = err.validator, err.validator_value
    if v == "required":
        missing = [f for f in val if isinstance(err.instance, dict) and f not in err.instance]
        return path + missing[:1], "required field is missing"
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {}))) if isinstance(err.instance, dict) else []
        return path + extra[:1], "unknown field" + (f" (known: {', '.join(sorted(err.schema['properties']))})" if err.schema.get("properties") else "")
    if v == "minimum":
        return path, f"must be >= {val}, not {shown_value(err.instance)}"
    if v == "maximum":
        return path, f"must be <= {val}, not {shown_value(err.instance)}"
    if v == "exclusiveMinimum":
        return path, f"must be > {val}, not {shown_value(err.instance)}"
    if v == "type":
        kinds = val if isinstance(val, list) else [val]
        if too_large(err.instance):
            return path, f"must be {' or '.join(kinds)}, not {shown_value(err.instance)}"
        return path, f"must be {' or '.join(kinds)}, not {type(err.instance).__name__} {err.instance!r}"
    if v == "enum":
        return path, f"must be one of {', '.join(map(str, val))}, not {err.instance!r}"
    if v == "const":
        return path, f"must be {val!r}, not {err.instance!r}"
    if v == "pattern":
        if val == NAME["pattern"] and isinstance(err.instance, str) and len(err.instance) > MAX_NAME \
                and re.fullmatch(_NAME_ANY_LENGTH, err.instance):
            return path, f"must be at most {MAX_NAME} characters, not {len(err.instance)} ({err.instance[:20]!r}...)"
        shown = val[:-2] + "$" if val.endswith("\\Z") else val  # as users write it
        return path, f"{err.instance!r} does not match {shown}"
    if v == "minItems":
        return path, f"needs at least {val} item(s)"
    if v == "maxItems":
        return path, f"at most {val} item(s)"
    if v == "minLength":
        return path, "must not be empty"
    if v == "propertyNames":
        return path, f"bad name {err.instance!r}" if not isinstance(err.instance, dict) else "bad variable name"
    if v == "anyOf":
        if "cpu" in path[-1:]:
            return path, f"must be a number of cores or a quantity like '500m', not {shown_value(err.instance)}"
        if "memory" in path[-1:]:
            return path, f"must be MiB or a quantity like '4Gi', not {shown_value(err.instance)}"
        if "command" in path[-1:]:
            return path, f"must be a non-empty string or list of strings, not {err.instance!r}"
    return path, err.message


def _schema_problems(schema: dict[str, Any], doc: Any) -> list[Problem]:
    validator = _VALIDATORS[id(schema)]
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        path, message = _message(err)
        out.append(Problem(_path(path), message))
    return out


def cpu_milli(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return int(float(value[:-1])) if value.endswith("m") else int(float(value) * 1000)
    return int(float(value) * 1000)


_MEM = {"": 1 / (1 << 20), "K": 1e3 / (1 << 20), "M": 1e6 / (1 << 20), "G": 1e9 / (1 << 20), "T": 1e12 / (1 << 20),
        "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1 << 20}


def memory_mib(value: Any) -> int:
    """Integers are MiB; strings are quantities (``4Gi``, ``512Mi``, ``1G``; a bare number in bytes)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", value)
    assert m is not None
    return int(float(m.group(1)) * _MEM[m.group(2) or ""])


def _gpu_tasks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in doc["tasks"] if (t.get("resources") or {}).get("gpus", 0) > 0]


def validate_job(doc: Any) -> list[Problem]:
    """Every problem of a job document (empty when valid)."""
    problems = _schema_problems(JOB_SCHEMA, doc)
    if not isinstance(doc, dict):
        return problems
    # a broken structure stops the extra rules; the schema problems above say where
    with contextlib.suppress(KeyError, TypeError, ValueError, AssertionError, AttributeError, OverflowError):
        problems += _semantic_problems(doc)
    return problems + _quantity_problems(doc) + _selector_problems(doc)


def _selector_problems(doc: dict[str, Any]) -> list[Problem]:
    """A node_selector of Kubernetes' label syntax (a pod's nodeSelector is checked so): a pair
    no node label can be (``zone: a b``) would keep the job pending for ever."""
    selector = doc.get("node_selector")
    if not isinstance(selector, dict):
        return []
    return [Problem(f"node_selector.{key}", problem) for key, value in selector.items()
            if isinstance(key, str) and isinstance(value, str) and (problem := label_problem(key, value)) is not None]


def _quantity_problems(doc: dict[str, Any]) -> list[Problem]:
    """A cpu or memory of the right form, but more than a stored job may hold (MAX_QUANTITY
    milli-CPU or MiB; or none at all: ``cpu: 1e308``, 400 digits). Those of the wrong form the
    schema has said."""
    problems: list[Problem] = []
    tasks = doc.get("tasks")
    for i, task in enumerate(tasks if isinstance(tasks, list) else ()):
        r = task.get("resources") if isinstance(task, dict) else None
        if not isinstance(r, dict):
            continue
        for field, convert, most in (("cpu", cpu_milli, "2^63-1 milli-CPU (about 9.2e15 cores)"),
                                     ("memory", memory_mib, "2^63-1 MiB (about 8.8e12 Ti)")):
            value = r.get(field)
            if not (isinstance(value, str) or finite_number(value)):
                continue
            try:
                ok = convert(value) <= MAX_QUANTITY
            except OverflowError:
                ok = False
            except (ValueError, TypeError, AssertionError):
                continue  # not a quantity: the schema's problem
            if not ok:
                shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:30]}... ({len(str(value))} characters)"
                problems.append(Problem(f"tasks[{i}].resources.{field}", f"too large: at most {most}, not {shown}"))
    return problems


def _semantic_problems(doc: dict[str, Any]) -> list[Problem]:
    """The rules a schema cannot say; run on a possibly invalid document."""
    problems: list[Problem] = []
    if not isinstance(doc.get("tasks"), list) or not all(isinstance(t, dict) and "name" in t for t in doc["tasks"]):
        return problems
    seen: dict[str, int] = {}
    for i, task in enumerate(doc["tasks"]):
        if task["name"] in seen:
            problems.append(Problem(f"tasks[{i}].name", f"duplicate task name {task['name']!r} (also tasks[{seen[task['name']]}])"))
        seen.setdefault(task["name"], i)
    gpu = [(i, t) for i, t in enumerate(doc["tasks"]) if (t.get("resources") or {}).get("gpus", 0) > 0]
    if gpu:
        first_i, first = gpu[0]
        shape = _shape(first)
        for i, t in gpu[1:]:
            if _shape(t) != shape:
                problems.append(Problem(f"tasks[{i}].resources", f"differs from tasks[{first_i}].resources; every GPU task of a gang must ask for the same gpus, gpu_type, cpu and memory"))
    total = sum(t.get("replicas", 1) for t in doc["tasks"])
    placed = sum(t.get("replicas", 1) for _, t in gpu) if gpu else total
    if "min_available" in doc and doc["min_available"] not in (total, placed) \
            and (len(doc["tasks"]) != 1 or doc["min_available"] > total):
        problems.append(Problem("min_available", f"must equal the number of tasks ({total}), or be below it for a job "
                                                     "of one task group (an elastic job: it starts with as many as fit)"))
    if "priority" in doc and "priority_class" in doc:
        problems.append(Problem("priority_class", "give priority or priority_class, not both"))
    if doc.get("max_restarts", 0) and doc.get("restart_policy", "Never") == "Never":
        problems.append(Problem("max_restarts", "needs restart_policy OnFailure"))
    if "estimate_s" in doc and "max_run_s" in doc and doc["estimate_s"] > doc["max_run_s"]:
        problems.append(Problem("estimate_s", f"must be <= max_run_s ({doc['max_run_s']})"))
    return problems + _dependency_problems(doc) + _array_problems(doc)


def _array_problems(doc: dict[str, Any]) -> list[Problem]:
    """The index list parses, and the elements' names (``<name>_<index>``) are valid names."""
    if not isinstance(doc.get("array"), str):
        return []
    try:
        spec = arrays.parse(doc["array"])
    except ValueError as exc:
        return [Problem("array", str(exc))]
    longest = arrays.element_name(str(doc.get("name", "")), spec.indices[-1])
    if len(longest) > 63:
        return [Problem("name", f"too long for a job array: its element {longest!r} has more than 63 characters")]
    return []


def _dependency_problems(doc: dict[str, Any]) -> list[Problem]:
    """No job depends on itself, nor twice on one job."""
    problems: list[Problem] = []
    deps = doc.get("depends_on")
    if not isinstance(deps, list):
        return problems
    seen: dict[str, int] = {}
    for i, d in enumerate(deps):
        if not isinstance(d, dict) or not isinstance(d.get("job"), str):
            continue
        if d["job"] == doc.get("name"):
            problems.append(Problem(f"depends_on[{i}].job", f"a job cannot depend on itself ({d['job']})"))
        elif d["job"] in seen:
            problems.append(Problem(f"depends_on[{i}].job", f"depends on job {d['job']} twice (also depends_on[{seen[d['job']]}])"))
        seen.setdefault(d["job"], i)
    return problems


def _shape(task: dict[str, Any]) -> tuple[Any, ...]:
    r = task.get("resources") or {}
    return (r.get("gpus", 0), r.get("gpu_type"), cpu_milli(r.get("cpu")), memory_mib(r.get("memory")), bool(r.get("rdma")))


def check_stored_job(name: str, doc: Any) -> list[Problem]:
    """Every problem of a job as stored under ``/registry/jobs/<name>`` (empty when the daemon
    may use it: ``to_model`` and ``task_instances`` then work and every field has its type).
    A valid job is recognised by ``_stored_job_ok`` (some microseconds; the daemon checks every
    spec it lists or sees change); only an invalid one pays for jsonschema's messages."""
    if _stored_job_ok(doc) and doc["name"] == name:
        return []
    problems = _schema_problems(STORED_JOB_SCHEMA, doc)
    if isinstance(doc, dict) and "name" in doc and doc["name"] != name:
        problems.insert(0, Problem("name", f"{doc['name']!r} is not the key's name {name!r}"))
    if not problems and isinstance(doc, dict) and doc.get("array") is not None \
            and not arrays.record_ok(doc["array"], doc["name"]):
        problems.append(Problem("array", f"an element of array {doc['array']['job']!r} with index "
                                         f"{doc['array']['index']} is named {arrays.element_name(doc['array']['job'], doc['array']['index'])!r}"))
    return problems


def _i(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _n(value: Any) -> bool:
    return finite_number(value)


def _name_ok(value: Any) -> bool:
    return isinstance(value, str) and re.search(NAME["pattern"], value) is not None


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _task_ok(t: Any) -> bool:
    if not isinstance(t, dict) or not all(f in t for f in STORED_TASK["required"]):
        return False
    r, command = t["resources"], t["command"]
    return (_name_ok(t["name"]) and _i(t["replicas"], 1, 1024) and isinstance(t["image"], str) and t["image"] != ""
            and isinstance(command, list) and len(command) >= 1 and all(isinstance(a, str) for a in command)
            and ("env" not in t or _strings(t["env"])) and isinstance(t.get("workdir", ""), str)
            and isinstance(r, dict) and all(f in r for f in ("gpus", "cpu_milli", "memory_mib", "rdma"))
            and _i(r["gpus"], 0, 64) and (r.get("gpu_type") is None or isinstance(r["gpu_type"], str))
            and _i(r["cpu_milli"], 0, MAX_QUANTITY) and _i(r["memory_mib"], 0, MAX_QUANTITY) and isinstance(r["rdma"], bool))


def _stored_job_ok(doc: Any) -> bool:
    """What STORED_JOB_SCHEMA accepts, said in code (tests/jobctl/test_schema.py holds the two
    equal over random documents); never raises."""
    if not isinstance(doc, dict) or not all(f in doc for f in STORED_JOB_SCHEMA["required"]):
        return False
    tasks, topo = doc["tasks"], doc.get("topology")
    positive = ("max_run_s", "estimate_s", "checkpoint_interval_s")
    return ((doc["kind"] == "Job" if "kind" in doc else True) and _name_ok(doc["name"]) and _name_ok(doc["tenant"])
            and _i(doc["priority"], -1000000, 1000000)
            and (doc.get("priority_class") is None or isinstance(doc["priority_class"], str))
            and isinstance(tasks, list) and 1 <= len(tasks) <= 16 and all(_task_ok(t) for t in tasks)
            and (topo is None or (isinstance(topo, dict) and "level" in topo and "mode" in topo
                                  and topo["mode"] in ("required", "preferred") and topo["level"] in ("node", "rack", "spine")
                                  and isinstance(topo.get("fewest_nodes", False), bool)))
            and ("node_selector" not in doc or _strings(doc["node_selector"]))
            and all(doc.get(f) is None or (_n(doc[f]) and doc[f] > 0) for f in positive)
            and isinstance(doc.get("preemptible", True), bool) and doc.get("restart_policy", "Never") in ("Never", "OnFailure")
            and ("max_restarts" not in doc or _i(doc["max_restarts"], 0, 100))
            and (doc.get("checkpoint_dir") is None or isinstance(doc["checkpoint_dir"], str))
            and ("grace_s" not in doc or (_n(doc["grace_s"]) and 0 <= doc["grace_s"] <= 3600))
            and (doc.get("ttl_seconds_after_finished") is None or _n(doc["ttl_seconds_after_finished"]))
            and ("submitted_at" not in doc or _n(doc["submitted_at"])) and isinstance(doc.get("cancelled", False), bool)
            and isinstance(doc.get("suspend", False), bool)
            and (doc.get("min_available") is None or _i(doc["min_available"], 1, 1 << 20))
            and ("depends_on" not in doc or _dependencies_ok(doc["depends_on"]))
            and (doc.get("array") is None or arrays.record_ok(doc["array"], doc["name"])))


def _dependencies_ok(deps: Any) -> bool:
    return isinstance(deps, list) and len(deps) <= MAX_DEPENDENCIES and all(
        isinstance(d, dict) and "job" in d and "condition" in d and _name_ok(d["job"])
        and d["condition"] in ("succeeded", "finished") for d in deps)


def validate_tenant(doc: Any) -> list[Problem]:
    problems = _schema_problems(TENANT_SCHEMA, doc)
    if not problems and doc.get("borrow_limit_gpus") is not None and doc["nominal_gpus"] == 0 and doc["borrow_limit_gpus"] == 0:
        problems.append(Problem("borrow_limit_gpus", "a tenant with nominal_gpus 0 and borrow_limit_gpus 0 can never run a GPU job"))
    if not problems and (doc.get("run_as_user") is None) != (doc.get("run_as_group") is None):
        problems.append(Problem("run_as_group" if doc.get("run_as_group") is None else "run_as_user",
                                "run_as_user and run_as_group go together"))
    return problems


def validate_priority_class(doc: Any) -> list[Problem]:
    return _schema_problems(PRIORITY_CLASS_SCHEMA, doc)


def normalize_job(doc: dict[str, Any], *, priority: int | None = None, submitted_at: float = 0.0) -> dict[str, Any]:
    """The stored form of a valid job: defaults filled in, quantities in milli-CPU and MiB,
    the priority class resolved to a value (``priority``)."""
    tasks = []
    for t in doc["tasks"]:
        r = t.get("resources") or {}
        command = t["command"]
        tasks.append({
            "name": t["name"], "replicas": t.get("replicas", 1), "image": t.get("image", "host"),
            "command": ["/bin/sh", "-c", command] if isinstance(command, str) else list(command),
            "env": {k: str(v) for k, v in (t.get("env") or {}).items()}, "workdir": t.get("workdir", ""),
            "resources": {"gpus": r.get("gpus", 0), "gpu_type": r.get("gpu_type"), "cpu_milli": cpu_milli(r.get("cpu")),
                          "memory_mib": memory_mib(r.get("memory")), "rdma": bool(r.get("rdma", False))},
        })
    topo = doc.get("topology")
    return {
        "kind": "Job",
        "name": doc["name"],
        "tenant": doc.get("tenant", "default"),
        "priority": priority if priority is not None else doc.get("priority", 0),
        "priority_class": doc.get("priority_class"),
        "tasks": tasks,
        "topology": None if topo is None else {"mode": topo.get("mode", "required"), "level": topo["level"],
                                               "fewest_nodes": topo.get("fewest_nodes", False)},
        "node_selector": dict(doc.get("node_selector") or {}),
        "max_run_s": doc.get("max_run_s"),
        "estimate_s": doc.get("estimate_s"),
        "preemptible": doc.get("preemptible", True),
        "restart_policy": doc.get("restart_policy", "Never"),
        "max_restarts": doc.get("max_restarts", 3 if doc.get("restart_policy") == "OnFailure" else 0),
        "checkpoint_dir": doc.get("checkpoint_dir"),
        "checkpoint_interval_s": doc.get("checkpoint_interval_s"),
        "grace_s": doc.get("grace_s", 30.0),
        "ttl_seconds_after_finished": doc.get("ttl_seconds_after_finished"),
        "submitted_at": submitted_at,
        "cancelled": False,
        "depends_on": [{"job": d["job"], "condition": d.get("condition", "succeeded")} for d in doc.get("depends_on") or []],
        **({"suspend": True} if doc.get("suspend") else {}),
        **({"min_available": doc["min_available"]} if _elastic_min(doc) is not None else {}),
    }


def _elastic_min(doc: dict[str, Any]) -> int | None:
    """An elastic job's min_available (below its replicas: one task group), else None."""
    tasks = doc.get("tasks") or []
    low = doc.get("min_available")
    if len(tasks) == 1 and isinstance(low, int) and not isinstance(low, bool) and 1 <= low < tasks[0].get("replicas", 1):
        return low
    return None


def elastic_run_size(spec: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
    """(GPUs, tasks) that an elastic job's run holds, from its status placement ``rows``
    (dicts with a ``gpus`` list); None for any other job or no run: those count the spec's size."""
    if spec.get("min_available") is None or not rows:
        return None
    return sum(len(r["gpus"]) for r in rows), len(rows)


def task_instances(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(task name, task group)`` for every instance, GPU tasks first (the core's task
    indices), then GPU-less tasks."""
    gpu = [t for t in spec["tasks"] if t["resources"]["gpus"] > 0]
    rest = [t for t in spec["tasks"] if t["resources"]["gpus"] == 0]
    out = []
    for group in gpu + rest:
        for i in range(group["replicas"]):
            out.append((f"{group['name']}-{i}", group))
    return out


_LEVELS = {"node": Level.NODE, "rack": Level.RACK, "spine": Level.SPINE}


def to_model(spec: dict[str, Any]) -> Job:
    """The core's view of a stored job: a uniform gang of the GPU tasks (or of every task
    when none has GPUs)."""
    gpu = [t for t in spec["tasks"] if t["resources"]["gpus"] > 0]
    groups = gpu or spec["tasks"]
    shape = groups[0]["resources"]
    topo = spec.get("topology")
    return Job(
        job_id=spec["name"],
        tenant=spec["tenant"],
        tasks=sum(t["replicas"] for t in groups),
        gpus_per_task=shape["gpus"],
        cpu_milli_per_task=shape["cpu_milli"],
        memory_mib_per_task=shape["memory_mib"],
        priority=spec["priority"],
        gpu_type=shape.get("gpu_type"),
        topology=None if topo is None else Topology(_LEVELS[topo["level"]], Mode(topo["mode"]), topo.get("fewest_nodes", False)),
        node_selector=tuple(sorted(spec.get("node_selector", {}).items())),
        est_runtime_s=spec.get("estimate_s"),
        max_runtime_s=spec.get("max_run_s"),
        preemptible=spec.get("preemptible", True),
        checkpoint_interval_s=spec.get("checkpoint_interval_s"),
        submit_s=spec.get("submitted_at", 0.0),
        min_tasks=_elastic_min(spec),
    )


def load_documents(text: str, source: str = "<stdin>") -> list[Any]:
    """Every YAML document in ``text`` (empty ones dropped); YAML errors name the line. A key
    given twice in a mapping, or one that is not a string, is an error (``agent.strict_yaml``)."""
    try:
        return [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{where}: invalid YAML: {problem}") from None
