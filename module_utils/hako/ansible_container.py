"""What the Ansible modules do, as plain Python: converge containers, read them, exec in them.

The modules in library/ parse their parameters and call one function here;
the plan comes from ansible_options (what differs, update or recreate), the
work from the engine and, for starts, the supervisor, which stays the
containers' parent after the module has returned.
"""

from __future__ import annotations

import os
import select

from . import ansible_options as ao
from . import client, store

# The supervisor runs from a lasting copy of this package (see
# lasting_package_parent); importing it here is what makes Ansible ship it.
from . import supervisor as _supervisor  # noqa: F401
from .engine import Engine
from .errors import Conflict, HakoError, InvalidValue, MissingLibrary, NotFound

# Container states as the modules speak of them.
ABSENT, RUNNING, STOPPED = "absent", "running", "stopped"


def open_engine() -> Engine:
    return Engine()


def supervisor_request(message: dict) -> dict:
    """One request to the supervisor, which is started (if it must be) from code that outlives us."""
    client.PACKAGE_PARENT = lasting_package_parent(store.run_dir())
    return client.request(message)


def lasting_package_parent(run_dir: str) -> str | None:
    """A directory holding a copy of this package that outlives the module, or None if not needed.

    Ansible runs a module from a zip archive that it deletes when the module
    returns; a supervisor started from there would lose its code. The copy
    goes under ``$HAKO_RUN/ansible/<digest>`` (gone at reboot, like the
    supervisor), once per version of the package.
    """
    if os.path.isdir(os.path.dirname(os.path.abspath(__file__))):
        return None
    from .package import PACKAGE, files_digest, package_files, write_package

    files = package_files()
    target = os.path.join(run_dir, "ansible", files_digest(files)[:16])
    if os.path.isfile(os.path.join(target, PACKAGE, "supervisor.py")):
        return target
    staging = f"{target}.{os.getpid()}.tmp"
    try:
        write_package(files, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, PACKAGE, "supervisor.py")):
                raise
    finally:
        store.remove_tree(staging)
    return target


# Reading containers -------------------------------------------------------------


def find(engine: Engine, name: str) -> dict | None:
    """The record of the container called exactly ``name`` (not an ID prefix), or None."""
    try:
        record = engine.get(name)
    except (NotFound, Conflict):
        return None
    return record if record["name"] == name else None


def coarse_state(status: str) -> str:
    return RUNNING if status in ("running", "paused") else STOPPED


def describe(engine: Engine, ref: str, stats: bool = False) -> dict:
    """A container as `hako inspect` shows it, with its cgroup's counters if asked and running."""
    info = engine.inspect(ref)
    if stats and info["State"]["Running"]:
        try:
            info["Stats"] = engine.stats(ref)["stats"].as_dict()
        except Conflict:  # it ended meanwhile
            pass
    return info


def info(engine: Engine, names: list[str] | None, labels: dict | None, stats: bool) -> dict:
    """hako_container_info: the named containers (all without names), filtered by labels."""
    wanted_labels = ao.normalize({"labels": labels})["labels"] if labels else {}
    if names:
        records, missing = [], []
        for name in names:
            record = find(engine, name)
            if record is None:
                missing.append(name)
            else:
                records.append(record)
    else:
        records, missing = [record for record, _ in engine.list()], []
    containers = []
    for record in records:
        if all(record.get("labels", {}).get(k) == v for k, v in wanted_labels.items()):
            try:
                containers.append(describe(engine, record["id"], stats))
            except NotFound:  # removed meanwhile
                missing.append(record["name"])
    return {"containers": containers, "missing": missing, "exists": not missing}


# Converging one container -----------------------------------------------------------


class Plan:
    """What converging one container does: the actions, in order, and the diff."""

    def __init__(self, name: str, record: dict | None, status: str) -> None:
        self.name = name
        self.record = record
        self.before_state = ABSENT if record is None else coarse_state(status)
        self.actions: list[str] = []
        self.done: list[str] = []  # the actions carried out so far
        self.differences: list[ao.Difference] = []
        self.wanted: dict = {}
        self.create_params: dict | None = None
        self.before: dict = {}
        self.after: dict = {}

    def after_state(self) -> str:
        if "remove" in self.actions:
            return ABSENT
        if "start" in self.actions or "restart" in self.actions:
            return RUNNING
        if self.before_state == RUNNING and not {"stop", "recreate"} & set(self.actions):
            return RUNNING
        return STOPPED

    def diff(self) -> dict:
        return {
            "before": {"state": self.before_state, **self.before},
            "after": {"state": self.after_state(), **self.after},
        }


def plan(engine: Engine, params: dict, check_mode: bool = False) -> Plan:
    """Compare the wanted container with what exists; change nothing (check mode stops here).

    In check mode a missing image is taken as one an earlier task would make,
    and a missing seccomp profile as one an earlier task would write.
    """
    name = ao.check_name(params["name"])
    record = find(engine, name)
    status = engine.status(record)["status"] if record is not None else ABSENT
    result = Plan(name, record, status)
    state = params.get("state") or "started"
    running = result.before_state == RUNNING
    if state == ABSENT:
        if record is not None:
            result.actions.append("remove")
        return result

    pending_profiles = []
    if check_mode:
        params, pending_profiles = ao.set_aside_missing_profiles(params)
    wanted = ao.normalize(params)
    if pending_profiles:
        wanted["security_opts"] = sorted(wanted["security_opts"] + pending_profiles)
    modes = ao.comparison_modes(params.get("comparisons"))
    if "image" in wanted:
        try:
            wanted["image"] = engine.images.get(wanted["image"]).id
        except NotFound:
            if not check_mode:
                raise ao.OptionError("image", f"no such image: {params['image']}") from None
            # A check run predicts: an earlier task (hako_image) would make it.
            wanted["image"] = f"(not yet present) {params['image']}"

    if "networks" in wanted:
        check_networks(engine, wanted["networks"], record, check_mode)
    result.wanted = wanted

    if record is None:
        if not params.get("image"):
            raise HakoError(f"image is required to create container {name}")
        decision = "create"
    else:
        result.differences = ao.compare(wanted, record, modes)
        decision = ao.decide(result.differences, bool(params.get("recreate")))
        shared = record["namespaces"].get("network", "private")
        if (
            decision == ao.UPDATE
            and shared != "private"
            and "networks" in {d.option for d in result.differences}
        ):
            raise ao.OptionError(
                "networks", f"container {name} uses the network namespace {shared}: it cannot join networks"
            )
    if decision in ("create", ao.RECREATE):
        create_params = dict(params)
        if not params.get("image"):
            create_params["image"] = _same_image(engine, record)
        ao.check_create(create_params)  # the whole container is valid before anything is removed
        result.create_params = create_params
    result.before, result.after = ao.diff_values(wanted, record, modes, decision)

    if decision == "create":
        result.actions.append("create")
        if state in ("started", "restarted"):
            result.actions.append("start")
        return result
    if decision == ao.RECREATE:
        result.actions.append("recreate")
        if state in ("started", "restarted") or (state == "present" and running):
            result.actions.append("start")
        return result
    updates = ao.in_place_actions(result.differences, modes)
    if state == "stopped" and running:
        result.actions += ["stop", *updates]  # stopped first: no cgroup to write
    else:
        result.actions += updates
        if state == "started" and not running:
            result.actions.append("start")
        elif state == "restarted":
            result.actions.append("restart" if running else "start")
    return result


def check_networks(engine: Engine, wanted: dict, record: dict | None, check_mode: bool) -> None:
    """Each wanted network exists, and an address asked for is in it and free (or this container's).

    In check mode a missing network is taken as one an earlier task
    (hako_network) would make.
    """
    from .network import ipam

    cid = record["id"] if record is not None else None
    networks = engine.networks()
    for name, want in wanted.items():
        try:
            network = networks.get(name)
        except NotFound:
            if check_mode:
                continue
            raise ao.OptionError("networks", f"no such network: {name}") from None
        if want["ip"] is None:
            continue
        try:
            address = str(ipam.parse_address("ip", want["ip"], ipam.parse_subnet(network["subnet"])))
        except InvalidValue as e:
            raise ao.OptionError(
                "networks", f"{name}: {str(e).replace('invalid value for ip: ', 'ip ')}"
            ) from None
        if address == network["gateway"]:
            raise ao.OptionError("networks", f"{name}: {address} is the network's gateway")
        for holder, endpoint in network["endpoints"].items():
            if endpoint["ip"] == address and holder != cid:
                raise ao.OptionError(
                    "networks", f"{name}: address {address} is in use by container {endpoint['name']}"
                )


def _same_image(engine: Engine, record: dict) -> str:
    """The reference a recreated container's image goes by: its name if that still names it."""
    try:
        if engine.images.get(record["image"]).id == record["image_id"]:
            return record["image"]
    except NotFound:
        pass
    return record["image_id"]


def apply(engine: Engine, plan: Plan, params: dict) -> str | None:
    """Carry out a plan; the ID of the container afterwards (None once removed).

    ``plan.done`` lists what went through, so that a failure half-way still
    reports the changes made before it.
    """
    cid = plan.record["id"] if plan.record is not None else None
    if plan.before_state == RUNNING and any(a.startswith(("connect ", "disconnect ")) for a in plan.actions):
        from .network import netlink

        netlink.pyroute2()  # a running container's interfaces need it: fail before anything changes
    for action in plan.actions:
        if action in ("create", "recreate"):
            cid = _make(engine, plan, cid, params)
            if "start" in plan.actions:  # started with it
                return cid
            continue
        if action == "remove":
            remove(engine, cid, params)
            cid = None
        elif action.startswith("update "):
            if not any(done.startswith("update ") for done in plan.done):
                # One call changes every option that differs.
                engine.update(cid, **ao.update_arguments(plan.differences, params))
        elif action.startswith("disconnect "):
            engine.disconnect(cid, action.split(" ", 1)[1])
        elif action.startswith("connect "):
            network = action.split(" ", 1)[1]
            endpoint = plan.wanted["networks"][network]
            engine.connect(cid, network, endpoint["ip"], endpoint["aliases"] or [])
        elif action == "start":
            supervisor_request({"op": "start", "id": cid})
        elif action == "stop":
            stop(engine, cid, params)
        elif action == "restart":
            stop(engine, cid, params)
            supervisor_request({"op": "start", "id": cid})
        plan.done.append(action)
    return cid


def _make(engine: Engine, plan: Plan, old: str | None, params: dict) -> str:
    """Create (after removing ``old``, for a recreate) and, if the plan starts it, start; the new ID."""
    if old is not None:
        remove(engine, old, params)
        plan.done.append("remove")  # until the new one exists
    options = ao.create_options(plan.create_params)
    if "start" in plan.actions:
        # The supervisor makes and starts it in one step, with a process made ahead.
        cid = supervisor_request({"op": "run", "options": options, "attach": False})["id"]
    else:
        from .options import ContainerOptions

        cid = engine.create(ContainerOptions(options.pop("image"), **options))["id"]
    if old is not None:
        plan.done.pop()
    plan.done += ["recreate" if old is not None else "create"] + (
        ["start"] if "start" in plan.actions else []
    )
    return cid


def stop(engine: Engine, cid: str, params: dict) -> None:
    """Stop with the stop signal and timeout, or with SIGKILL at once under ``force_kill``."""
    if not params.get("force_kill"):
        engine.stop(cid, params.get("stop_timeout"))
    elif engine.run_state(cid) is not None:
        engine.kill(cid)


def remove(engine: Engine, cid: str, params: dict) -> None:
    if engine.run_state(cid) is not None:
        stop(engine, cid, params)
    engine.remove(cid, force=True)


def converge(engine: Engine, params: dict, check_mode: bool) -> dict:
    """Plan and (unless in check mode) apply; the module's result for one container."""
    return carry_out(engine, plan(engine, params, check_mode), params, check_mode)


def carry_out(engine: Engine, the_plan: Plan, params: dict, check_mode: bool) -> dict:
    actions = list(the_plan.actions)
    if check_mode or not actions:
        cid = the_plan.record["id"] if the_plan.record is not None else None
    else:
        try:
            cid = apply(engine, the_plan, params)
        except HakoError as e:
            # What went through before the failure is changed all the same.
            e.done = list(the_plan.done)
            raise
    return {
        "name": the_plan.name,
        "changed": bool(actions),
        "actions": actions,
        "container": describe(engine, cid) if cid is not None else {},
        "diff": the_plan.diff(),
    }


# Many containers ---------------------------------------------------------------------


def label_selector(value: str) -> tuple[str, str | None]:
    key, eq, wanted = value.partition("=")
    if not key:
        raise ao.OptionError("purge_label", f"{value!r} (expected KEY or KEY=VALUE)")
    return key, wanted if eq else None


def converge_many(
    engine: Engine,
    items: list[dict],
    check_mode: bool,
    purge: str | None = None,
    force_kill: bool = False,
    links: list[dict] | None = None,
) -> dict:
    """hako_containers: converge each item; with ``purge``, remove labelled containers not declared.

    Every item is planned (checked, compared) before anything changes; a
    failure while changing one container does not stop the others, and is
    reported at the end.
    """
    selector = label_selector(purge) if purge else None
    items = list(items)
    names: set[str] = set()
    plans = []
    for index, item in enumerate(items):
        where = f"containers[{index}] ({item.get('name')})"
        if item["name"] in names:
            raise HakoError(f"{where}: the name {item['name']} is declared twice")
        names.add(item["name"])
        try:
            plans.append(plan(engine, item, check_mode))
        except HakoError as e:
            raise HakoError(f"{where}: {e}") from None
    if selector is not None:
        key, value = selector
        for record, _status in engine.list():
            labels = record.get("labels", {})
            if record["name"] in names or key not in labels or (value is not None and labels[key] != value):
                continue
            params = {"name": record["name"], "state": ABSENT, "force_kill": force_kill}
            items.append(params)
            plans.append(plan(engine, params))

    links_plan = None
    if links is not None:
        from .ansible_links import plan_links

        links_plan = plan_links(engine, links, names)  # checked before anything changes

    results, failures = [], []
    missing_library = None
    for item, the_plan in zip(items, plans):
        try:
            results.append(carry_out(engine, the_plan, item, check_mode))
        except HakoError as e:
            if isinstance(e, MissingLibrary):
                missing_library = e.library
            failures.append(f"{item['name']}: {e}")
            results.append(
                {"name": item["name"], "changed": False, "actions": [], "failed": True, "msg": str(e)}
            )
    result = {
        "changed": any(r["changed"] for r in results),
        "results": results,
        "failures": failures,
        "missing_library": missing_library,
    }
    if links_plan is not None:
        from .ansible_links import converge_links

        present = {item["name"] for item in items if item.get("state") != ABSENT}
        # Planned again, not reused: a container made again above lost its links with its record.
        try:
            result["links"] = converge_links(engine, links, present, check_mode)
        except HakoError as e:
            failures.append(str(e))
            result["links"] = {"changed": False, "failed": True, "msg": str(e)}
        result["changed"] = result["changed"] or result["links"]["changed"]
    return result


# Exec ------------------------------------------------------------------------------------


def run_exec(
    engine: Engine,
    ref: str,
    argv: list[str],
    env: list[str] | None = None,
    user: str | None = None,
    workdir: str | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in a running container; its exit code, standard output and error."""
    from .linux import exit_code
    from .runtime.process import Stdio, finish

    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            spawned = engine.exec(
                ref, argv, Stdio(stdout=out_w, stderr=err_w), env=env, user=user, workdir=workdir
            )
            finish(spawned)
        finally:
            os.close(out_w)
            os.close(err_w)
        output = {out_r: bytearray(), err_r: bytearray()}
        reading = set(output)
        status = None
        while True:
            ready = select.select(list(reading), [], [], 0.2 if status is None else 0)[0] if reading else []
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    output[fd] += data
                else:
                    reading.discard(fd)
            if status is None:
                status = _reap(spawned.pid)
            # Done once it has ended and its output is read (or held open by
            # something it left running in the background).
            if status is not None and (not reading or not ready):
                return exit_code(status), bytes(output[out_r]), bytes(output[err_r])
    finally:
        os.close(out_r)
        os.close(err_r)


def _reap(pid: int) -> int | None:
    """The wait status of ``pid`` once it has ended, else None; orphans passed to us are reaped too."""
    while True:
        try:
            found, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if found == 0:
            return None
        if found == pid:
            return status
