"""The engine: containers as records, bundles and processes.

The CLI and the Ansible modules call this; it calls the image store, the
cgroup drivers and the runtime. State layout (see store.py)::

    $HAKO_ROOT/containers/<id>/hako.json    the record: options, image, last exit
    $HAKO_ROOT/containers/<id>/config.json  the OCI config of the latest start
    $HAKO_ROOT/containers/<id>/rootfs/      mount point of the overlay root
    $HAKO_ROOT/containers/<id>/upper, work  the container's writable layer
    $HAKO_ROOT/containers/<id>/layer.ext4   ... or, with a size, its filesystem (see storage.py)
    $HAKO_ROOT/containers/<id>/container.log
    $HAKO_ROOT/names/<name>                 the ID a name belongs to
    $HAKO_RUN/containers/<id>.json          pid, its start time and its owner
    $HAKO_RUN/locks/<id>                    flock serializing changes to one container

A container runs while its run-state names a live process (the pid and the
kernel's start time of that pid both match). The process that started it, its
owner, reaps it and records the exit; if the owner is gone, whoever looks next
records the container as exited with an unknown code and clears what is left.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (see lean.py)
import errno
import os
import time

from .. import linux, store
from ..cgroups import open_cgroup
from ..devices import docker_devices
from ..errors import Conflict, HakoError, InvalidValue, NotFound
from ..images.store import ImageStore
from ..options import (
    ContainerOptions,
    merge_limits,
    oci_resources,
    parse_restart_policy,
    parse_user,
    unlimited_resources,
    validate,
)
from . import oci

TYPE_CHECKING = False  # typing costs an import on the hot path
if TYPE_CHECKING:
    from ..runtime import process as rt

EXIT_UNKNOWN = -1
TRASH_PREFIX = ".trash-"
USERNS_AUTO_BASE = 100000


class Engine:
    def __init__(self, root: str | None = None, run: str | None = None) -> None:
        self.root = root or store.root_dir()
        self.run = run or store.run_dir()
        self.containers_dir = os.path.join(self.root, "containers")
        self.names_dir = os.path.join(self.root, "names")
        self.state_dir = os.path.join(self.run, "containers")
        self.locks_dir = os.path.join(self.run, "locks")
        self.cgroup_parent = store.cgroup_parent()
        self.images = ImageStore(self.root)
        self._cgroup_mode: str | None = None

    # Paths and records ------------------------------------------------------
    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid)

    def log_path(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid, "container.log")

    def _record_path(self, cid: str) -> str:
        return os.path.join(self.containers_dir, cid, "hako.json")

    def _state_path(self, cid: str) -> str:
        return os.path.join(self.state_dir, cid + ".json")

    def _lock(self, cid: str):
        os.makedirs(self.locks_dir, exist_ok=True)
        return store.locked(os.path.join(self.locks_dir, cid))

    def _names_lock(self):
        os.makedirs(self.names_dir, exist_ok=True)
        return store.locked(os.path.join(self.names_dir, ".lock"))

    def cgroup_mode(self) -> str:
        if self._cgroup_mode is None:
            from ..cgroups import detect_mode

            self._cgroup_mode = detect_mode()
        return self._cgroup_mode

    def load(self, cid: str) -> dict:
        record = store.read_json(self._record_path(cid))
        if record is None:
            raise NotFound(f"no such container: {cid}")
        return record

    def _save(self, record: dict) -> None:
        # A --rm container's record lives for one run: it needs no fsync.
        store.write_json(self._record_path(record["id"]), record, sync=not record.get("auto_remove"))

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.containers_dir)
        except FileNotFoundError:
            return []
        return [n for n in names if len(n) == 64 and os.path.exists(self._record_path(n))]

    def resolve(self, ref: str) -> str:
        """The ID of the container a name, an ID or an unambiguous ID prefix names."""
        if not ref:
            raise InvalidValue("container", ref)
        hexadecimal = all(ch in "0123456789abcdef" for ch in ref)
        if len(ref) == 64 and hexadecimal and os.path.exists(self._record_path(ref)):
            return ref  # a full ID: no need to list every container
        try:
            with open(os.path.join(self.names_dir, ref)) as f:
                cid = f.read().strip()
            if os.path.exists(self._record_path(cid)):
                return cid
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
        matches = [c for c in self.ids() if c.startswith(ref)] if hexadecimal else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise Conflict(f"container reference {ref!r} is ambiguous: it matches {len(matches)} containers")
        raise NotFound(f"no such container: {ref}")

    def get(self, ref: str) -> dict:
        return self.load(self.resolve(ref))

    # Run-state -------------------------------------------------------------
    def run_state(self, cid: str) -> dict | None:
        """The run-state of a container whose process is alive, else None."""
        state = store.read_json(self._state_path(cid))
        if state is None:
            return None
        if not linux.process_alive(state["pid"], state["start_time"]):
            return None
        return state

    def status(self, record: dict) -> dict:
        """Docker's view of a container: status, pid, exit code, times."""
        cid = record["id"]
        state = self.run_state(cid)
        last = record.get("state", {})
        if state is not None:
            paused = self._cgroup(cid).frozen() if state.get("paused") else False
            return {
                "status": "paused" if paused else "running",
                "pid": state["pid"],
                "started_at": state["started_at"],
                "exit_code": None,
                "finished_at": None,
            }
        stale = store.read_json(self._state_path(cid))
        if stale is not None:
            # Exited a moment ago: its owner is recording it, or, if the owner
            # died, this records it.
            self._wait_recorded(cid, 2.0)
            record = store.read_json(self._record_path(cid)) or record
            last = record.get("state", last)
        ran = bool(last.get("finished_at") or last.get("started_at"))
        return {
            "status": "exited" if ran else "created",
            "pid": 0,
            "started_at": last.get("started_at"),
            # Started but no exit recorded: its process went with a reboot.
            "exit_code": last.get("exit_code", EXIT_UNKNOWN) if ran else None,
            "finished_at": last.get("finished_at"),
            "oom_killed": last.get("oom_killed", False),
        }

    @staticmethod
    def _owner_alive(state: dict) -> bool:
        owner = state.get("owner", {})
        return bool(owner) and linux.process_start_time(owner.get("pid", 0)) == owner.get("start_time")

    def _cgroup(self, cid: str):
        return open_cgroup(f"{self.cgroup_parent}/{cid}", self.cgroup_mode())

    # Create ----------------------------------------------------------------
    def create(self, options: ContainerOptions, cid: str | None = None) -> dict:
        """Make a container (record, bundle directory, writable layer); start nothing.

        ``cid`` is an ID chosen ahead (the supervisor names a spare cgroup
        after it); by default a new random one.
        """
        record = validate(options)
        image = self.images.get(options.image)
        for mode in record["namespaces"].values():
            if mode.startswith("container:"):
                self.resolve(mode.split(":", 1)[1])
        cid = cid or os.urandom(32).hex()
        record.update(
            id=cid,
            image_id=image.id,
            created=time.time(),
            state={},
        )
        directory = self.container_dir(cid)
        with self._names_lock():
            name = record["name"] or self._generate_name()
            name_path = os.path.join(self.names_dir, name)
            if os.path.exists(name_path):
                with open(name_path) as f:
                    owner = f.read().strip()
                if os.path.exists(self._record_path(owner)):
                    raise Conflict(f'the container name "{name}" is already in use by container {owner[:12]}')
            record["name"] = name
            if record["userns"] and record["userns"].get("auto"):
                record["userns"] = {
                    "host_id": self._free_userns_range(record["userns"]["size"]),
                    "size": record["userns"]["size"],
                }
            try:
                os.makedirs(os.path.join(directory, "rootfs"))
                owner = record["userns"]["host_id"] if record["userns"] else 0
                if record.get("storage_opts"):
                    from .storage import make_layer

                    make_layer(directory, record, owner)
                    layer = ("rootfs",)
                else:
                    for sub in ("upper", "work"):
                        os.mkdir(os.path.join(directory, sub), 0o755)
                    layer = ("upper", "work", "rootfs")
                if owner:
                    for sub in layer:
                        os.chown(os.path.join(directory, sub), owner, owner)
                if record["networks"]:
                    record["networks"] = self._allocate(cid, name, record["networks"])
                self._save(record)
                store.atomic_write(name_path, cid + "\n", sync=not record["auto_remove"])
            except BaseException:
                if record["networks"]:
                    self.networks().release(cid)
                store.remove_tree(directory)
                raise
        if record["networks"]:
            self.refresh_hosts([e["network"] for e in record["networks"]], but=cid)
        return record

    # Networks --------------------------------------------------------------
    def networks(self):
        from ..network import Networks

        return Networks(self.root)

    def owner_alias(self) -> str:
        """The alias of the interfaces hako makes: which state directory they belong to."""
        return f"hako-root:{os.path.realpath(self.root)}"[:255]

    def firewall(self, backend=None):
        from ..network.firewall import Firewall

        return Firewall(self.run, backend)

    def _firewall_setup(self, record: dict, records: dict[str, dict], endpoints=None) -> bool:
        """Rules of the networks of ``endpoints`` (default: all of the container's) and of its ports.

        Whether the container's ports are published now. Without nft and
        iptables, networks without NAT and containers without ports still work.
        """
        from ..network.firewall import network_nat

        networks = [records[e["network"]] for e in (record["networks"] if endpoints is None else endpoints)]
        ports = record.get("ports") or []
        try:
            firewall = self.firewall()
        except HakoError:
            if ports or any(network_nat(n) for n in networks):
                raise
            return False
        address = record["networks"][0]["ip"] if ports else None
        firewall.setup(networks, record["id"], ports, address, holder=self._container_name)
        return bool(ports)

    def _firewalls(self) -> list:
        """A Firewall for each backend installed: rules made under another HAKO_FIREWALL go too."""
        from ..network import firewall

        return [self.firewall(backend) for backend in firewall.available()]

    def _unpublish(self, cid: str) -> None:
        """Remove a container's port rules; a failure leaves them to the next reclaim (system prune)."""
        for firewall in self._firewalls():
            try:
                firewall.unpublish(cid)
            except HakoError:
                pass

    def _container_name(self, cid: str) -> str:
        try:
            return self.load(cid)["name"]
        except NotFound:
            return cid[:12]

    def _allocate(self, cid: str, name: str, wanted: list[dict]) -> list[dict]:
        """Addresses on each network asked for; the record's endpoints (interface eth0, eth1, ...)."""
        from ..network import DEFAULT_NETWORK, interface_name

        networks = self.networks()
        endpoints = []
        try:
            for index, want in enumerate(wanted):
                if want["name"] == DEFAULT_NETWORK:
                    networks.ensure_default()
                endpoint = networks.allocate(want["name"], cid, name, want["ip"], want["aliases"])
                endpoints.append(
                    {
                        "network": want["name"],
                        "interface": interface_name(index),
                        "ip": endpoint["ip"],
                        "aliases": endpoint["aliases"],
                    }
                )
        except BaseException:
            networks.release(cid)
            raise
        return endpoints

    def connect(self, ref: str, network: str, ip: str | None = None, aliases=()) -> dict:
        """Put a container on one more network; a running one gets its interface at once."""
        from ..network import interface_name
        from ..network.ipam import parse_address

        if ip:
            ip = str(parse_address("ip", ip))
        cid = self.resolve(ref)
        with self._lock(cid):
            record = self.load(cid)
            if record["namespaces"]["network"] != "private":
                raise Conflict(
                    f"container {record['name']} uses the network namespace "
                    f"{record['namespaces']['network']}: it cannot join networks"
                )
            if any(e["network"] == network for e in record.get("networks", [])):
                raise Conflict(f"container {record['name']} is already on network {network}")
            used = {e["interface"] for e in record.get("networks", [])}
            if os.path.exists(os.path.join(self.root, "links.json")):
                from .links import link_interfaces

                used |= link_interfaces(self, cid)
            interface = next(interface_name(i) for i in range(len(used) + 1) if interface_name(i) not in used)
            endpoint = self.networks().allocate(network, cid, record["name"], ip, list(aliases))
            entry = {
                "network": network,
                "interface": interface,
                "ip": endpoint["ip"],
                "aliases": endpoint["aliases"],
            }
            record.setdefault("networks", []).append(entry)
            try:
                state = self.run_state(cid)
                if state is not None:
                    from ..network import hosts, netlink

                    records = self._network_records(record)
                    netlink.attach(state["pid"], record, records, endpoints=[entry], owner=self.owner_alias())
                    try:
                        self._firewall_setup(record, records, endpoints=[entry])
                    except BaseException:
                        netlink.detach(cid, entry["interface"])
                        raise
                    hosts.write_in_place(
                        os.path.join(self.container_dir(cid), "hosts"), hosts.hosts_text(record, records)
                    )
                self._save(record)
            except BaseException:
                self.networks().release(cid, [network])
                raise
        self.refresh_hosts([network], but=cid)
        return entry

    def disconnect(self, ref: str, network: str) -> dict:
        """Take a container off a network; a running one loses its interface at once."""
        cid = self.resolve(ref)
        with self._lock(cid):
            record = self.load(cid)
            entry = next((e for e in record.get("networks", []) if e["network"] == network), None)
            if entry is None:
                raise NotFound(f"container {record['name']} is not on network {network}")
            state = self.run_state(cid)
            if state is not None:
                from ..network import netlink

                netlink.detach(cid, entry["interface"])
            record["networks"].remove(entry)
            if entry["interface"] in record.get("shaping", {}):
                del record["shaping"][entry["interface"]]  # not for the next network to get the name
            self._save(record)
            self.networks().release(cid, [network])
            if state is not None and record.get("ports"):
                # The ports lead to the first network's address: it may have changed.
                if record["networks"]:
                    self._firewall_setup(record, self._network_records(record), endpoints=[])
                else:
                    self._unpublish(cid)
            if state is not None:
                from ..network import hosts

                hosts.write_in_place(
                    os.path.join(self.container_dir(cid), "hosts"),
                    hosts.hosts_text(record, self._network_records(record)),
                )
        self.refresh_hosts([network])
        return entry

    # Links and shaping (engine/links.py) ------------------------------------
    def create_links(self, specs: list[dict]) -> list[dict]:
        """Links between containers; see engine.links.create_links for the specs."""
        from .links import create_links

        return create_links(self, specs)

    def remove_link(self, ref: str) -> dict:
        from .links import remove_link

        return remove_link(self, ref)

    def list_links(self) -> list[dict]:
        from .links import list_links

        return list_links(self)

    def shape(self, ref: str, shape: dict | None) -> dict:
        """Shape what leaves CONTAINER:IF (``ref``); None clears it."""
        from .links import shape as shape_interface

        return shape_interface(self, ref, shape)

    def remove_network(self, name: str, force: bool = False) -> dict:
        """Remove a network and its bridge; with ``force``, its containers are disconnected first."""
        networks = self.networks()
        record = networks.get(name)
        if os.path.exists(f"/sys/class/net/{record['bridge']}"):
            from ..network import netlink

            netlink.pyroute2()  # removing the bridge needs it: fail before anything changes
        if record["endpoints"] and force:
            for cid in list(record["endpoints"]):
                try:
                    self.disconnect(cid, name)
                except NotFound:
                    networks.release(cid, [name])  # a record gone half way
        record = networks.remove(name)
        failure = None
        for firewall in self._firewalls():
            try:
                firewall.remove_network(record)
            except HakoError as e:
                failure = failure or e  # the bridge goes all the same; `system prune` retries
        if os.path.exists(f"/sys/class/net/{record['bridge']}"):
            from ..network import netlink

            netlink.remove_bridge(record)
        if failure is not None:
            raise failure
        return record

    def prune_leftovers(self) -> list[str]:
        """Remove what crashed runs of this state left on the host; what was removed, one line each.

        Host-side veths (``hk<id><n>``) of containers that are not running,
        bridges (``hk-*``, ``hako0``) whose network is gone, both only when
        their alias names this state directory (another HAKO_ROOT's are left
        alone), then, in every firewall backend installed, the rules of
        containers whose network namespace is gone and of networks whose
        bridge is gone. First, loop devices of this state's size-limited
        layers that nothing would detach (see storage.reclaim).
        """
        from ..network import firewall, netlink
        from .storage import reclaim

        removed = reclaim(self)
        owner = self.owner_alias()
        networks = self.networks()
        for name in sorted(_host_interfaces()):
            if _interface_alias(name) != owner:
                continue
            if name.startswith("hk-") or name == "hako0":
                if name not in {n["bridge"] for n in networks.list()} and netlink.remove_interface(
                    netlink.host(), name
                ):
                    removed.append(f"bridge {name}")
            elif name.startswith("hk"):
                cid = next((c for c in self.ids() if c.startswith(name[2:12])), None)
                if cid is None:
                    gone = netlink.remove_interface(netlink.host(), name)
                else:
                    with self._lock(cid):  # not while it starts
                        gone = self.run_state(cid) is None and netlink.remove_interface(netlink.host(), name)
                if gone:
                    removed.append(f"veth {name}")

        def network_stale(name: str, ifnames: frozenset, interfaces: set) -> bool:
            try:
                if networks.get(name)["bridge"] in ifnames:
                    return False
            except (NotFound, InvalidValue):
                pass
            return not (ifnames & interfaces)

        for each in self._firewalls():
            backend = each.backend
            for tag in each.reclaim(network_stale):
                if tag.startswith(firewall.CONTAINER_TAG):
                    removed.append(
                        f"{backend.name} rules of container {tag[len(firewall.CONTAINER_TAG) :][:12]}"
                    )
                elif tag.startswith(firewall.NETWORK_TAG):
                    removed.append(f"{backend.name} rules of network {tag[len(firewall.NETWORK_TAG) :]}")
                else:
                    removed.append(f"{backend.name} {backend.holds}, nothing left in it")
        return removed

    def _network_records(self, record: dict) -> dict[str, dict]:
        if not record.get("networks"):
            return {}  # nothing imported for a container without networks
        networks = self.networks()
        return {e["network"]: networks.get(e["network"]) for e in record.get("networks", [])}

    def refresh_hosts(self, network_names: list[str], but: str | None = None) -> None:
        """Rewrite /etc/hosts of the running containers on these networks (members came or went)."""
        from ..network import hosts

        networks = self.networks()
        records: dict[str, dict] = {}
        members: set[str] = set()
        for name in network_names:
            try:
                members |= set(networks.get(name)["endpoints"])
            except NotFound:
                continue
        for cid in sorted(members - {but}):
            if self.run_state(cid) is None:
                continue  # written afresh when it starts
            record = store.read_json(self._record_path(cid))
            if record is None:
                continue
            for endpoint in record.get("networks", []):
                if endpoint["network"] not in records:
                    records[endpoint["network"]] = networks.get(endpoint["network"])
            path = os.path.join(self.container_dir(cid), "hosts")
            if os.path.exists(path):
                hosts.write_in_place(path, hosts.hosts_text(record, records))

    def _generate_name(self) -> str:
        from .names import random_name

        for _ in range(100):
            name = random_name()
            if not os.path.exists(os.path.join(self.names_dir, name)):
                return name
        raise HakoError("could not find a free container name")

    def _free_userns_range(self, size: int) -> int:
        used = []
        for cid in self.ids():
            userns = (store.read_json(self._record_path(cid)) or {}).get("userns")
            if userns:
                used.append((userns["host_id"], userns["host_id"] + userns["size"]))
        start = USERNS_AUTO_BASE
        for low, high in sorted(used):
            if start + size <= low:
                break
            start = max(start, high)
        return start

    # Start -----------------------------------------------------------------
    def start(self, ref: str, stdio: rt.Stdio, spare: rt.Middle | None = None) -> rt.Spawned | None:
        """Start a container; the caller becomes its owner and must reap it.

        ``spare`` is a middle process already placed in a cgroup of its own
        (see supervisor.py); that cgroup becomes the container's. Returns None
        when the container is already running. The caller reaps the returned
        process and passes its wait status to ``finish``.
        """
        from ..runtime import process as rt

        cid = self.resolve(ref)
        with self._lock(cid):
            try:
                record = self.load(cid)
                if self.run_state(cid) is not None:
                    if spare is not None:
                        spare.discard()
                    return None
                # The spare's cgroup may already be this container's: keep it.
                spare_is_ours = spare is not None and spare.cgroup.name == f"{self.cgroup_parent}/{cid}"
                self._clear_leftovers(cid, keep_cgroup=spare_is_ours)
                networks = self._network_records(record)
                config = self._config_for_start(record, networks)
                bundle = self.container_dir(cid)
                store.write_json(os.path.join(bundle, "config.json"), config, sync=False)
                if spare is not None:
                    spare.wait_placed()
                    if spare.prepared and not spare.fits(config):
                        raise HakoError("internal: the spare does not fit this container")
                    if spare.cgroup.name != config["linux"]["cgroupsPath"]:
                        spare.cgroup = spare.cgroup.rename(config["linux"]["cgroupsPath"])
                    cgroup = spare.cgroup
                else:
                    cgroup = self._cgroup(cid)
                    cgroup.create()
            except BaseException:
                if spare is not None:
                    spare.discard()
                raise
            spawned = None
            published = False
            try:
                resources = dict(config["linux"]["resources"])
                devices = resources.pop("devices", None)
                cgroup.apply(resources)
                spawned = rt.spawn_init(bundle, config, stdio, cgroup, middle=spare)
                if devices is not None:
                    # Once the container is set up and waits to execute its
                    # command: hako's own setup may need a device the
                    # container may not open (the loop device of a sized
                    # writable layer).
                    cgroup.apply({"devices": devices})
                sockets = self._wiring(record)
                try:
                    if record.get("networks"):
                        from ..network import netlink

                        ns = sockets.get(spawned.pid)
                        netlink.attach(spawned.pid, record, networks, ns=ns, owner=self.owner_alias())
                        published = self._firewall_setup(record, networks)
                    os.makedirs(self.state_dir, exist_ok=True)
                    me = os.getpid()
                    store.write_json(
                        self._state_path(cid),
                        {
                            "pid": spawned.pid,
                            "start_time": spawned.start_time,
                            "started_at": time.time(),
                            "owner": {"pid": me, "start_time": linux.process_start_time(me)},
                        },
                        sync=False,
                    )
                    if sockets is not None:
                        # After the run-state: a container starting at the same
                        # time then sees this one running (see engine/links.py).
                        from .links import wire_at_start

                        wire_at_start(self, record, spawned.pid, sockets)
                finally:
                    if sockets is not None:
                        sockets.close()
                rt.start(spawned)
                if not record.get("auto_remove"):
                    # Keep that it ran: after a reboot (or the loss of its
                    # owner) it then reads as exited, not as never started.
                    record.pop("manual_stop", None)
                    record["state"] = {"started_at": time.time()}
                    self._save(record)
            except BaseException:
                if spawned is not None:
                    spawned.abort()
                elif spare is not None:
                    spare.discard(remove_cgroup=False)
                if published:
                    self._unpublish(cid)
                self._remove_state(cid)
                cgroup.remove()
                raise
            return spawned

    def _wiring(self, record: dict):
        """Netlink sockets for a start that makes interfaces, links, shapes or sysctls; else None."""
        if not (record.get("networks") or record.get("shaping") or record.get("sysctls")):
            if not os.path.exists(os.path.join(self.root, "links.json")):
                return None
            from .links import has_links

            if not has_links(self, record["id"]):
                return None
        from ..network.netlink import Sockets

        return Sockets()

    def _config_for_start(self, record: dict, networks: dict[str, dict]) -> dict:
        """The OCI config of a start; ``networks`` are the records of the container's networks."""
        from ..images.store import Image

        cid = record["id"]
        try:
            image = self.images.get(record["image_id"])
        except NotFound:
            raise NotFound(
                f"container {record['name']}: its image {record['image_id'][7:19]} is gone"
            ) from None
        paths = {}
        for kind, mode in record["namespaces"].items():
            if mode.startswith("container:"):
                other = self.resolve(mode.split(":", 1)[1])
                state = self.run_state(other)
                if state is None:
                    raise Conflict(f"cannot join the {kind} namespace of {mode[10:]}: it is not running")
                paths[kind] = f"/proc/{state['pid']}/ns/{linux.NAMESPACES[kind][1]}"
        userns = record["userns"]
        shift = (userns["host_id"], userns["host_id"]) if userns else None
        assert isinstance(image, Image)
        lower = self.images.lower_dirs(image, shift)
        directory = self.container_dir(cid)
        user = user_spec(record.get("user") or image_user(image.config), record.get("group_add"))
        upper, work = os.path.join(directory, "upper"), os.path.join(directory, "work")
        if record.get("storage_opts"):
            from .storage import layer_annotations, layer_dirs

            upper, work = layer_dirs(directory, record)
        config = oci.build_config(
            record,
            image.config,
            lower,
            upper,
            work,
            paths,
            userns,
            user,
            self.cgroup_mode(),
            f"{self.cgroup_parent}/{cid}",
            self._v1_hierarchies(),
        )
        if record.get("storage_opts"):
            config["annotations"].update(layer_annotations(directory))
        if record.get("networks"):
            from ..network import hosts

            files = hosts.write_files(directory, record, networks)
            for destination, source in files.items():
                config["mounts"].append(
                    {"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rw"]}
                )
        return config

    def default_mount_plan(self) -> dict:
        """The mounts, masked and read-only paths every default container has (for a spare to stage)."""
        return {
            "mounts": oci.default_mounts(self.cgroup_mode(), True, self._v1_hierarchies()),
            "maskedPaths": list(oci.MASKED_PATHS),
            "readonlyPaths": list(oci.READONLY_PATHS),
        }

    def _v1_hierarchies(self) -> list[tuple[str, list[str]]] | None:
        """The host's v1 hierarchies holding controllers a container sees, as (name, controllers)."""
        if self.cgroup_mode() == "unified":
            return None
        from ..cgroups import find_v1_hierarchies

        groups: dict[str, list[str]] = {}
        for controller, mount in find_v1_hierarchies().items():
            groups.setdefault(mount, []).append(controller)
        return sorted(
            (os.path.basename(mount), sorted(controllers))
            for mount, controllers in groups.items()
            if set(controllers) & set(oci.V1_CONTROLLERS)
        )

    # Exit ------------------------------------------------------------------
    def finish(self, cid: str, wait_status: int | None, defer_release: bool = False) -> dict | None:
        """Record how a container's process ended and release what it held.

        ``wait_status`` is None when the exit status could not be collected.
        With ``defer_release`` the slow part (removing the cgroup and, for
        --rm, the files) is left for ``release``, so the exit can be reported
        first. Returns what a restart policy needs: whether a person stopped
        it, the record (None once removed), and what ``release`` takes.
        """
        with self._lock(cid):
            return self._finish(cid, wait_status, defer_release)

    def release(self, cid: str, trash: str | None = None) -> None:
        """The deferred part of ``finish``: the cgroup, and a removed container's files."""
        with self._lock(cid):
            if self.run_state(cid) is None:
                self._cgroup(cid).remove()
        if trash:
            store.remove_tree(trash)
        # Gone (--rm, or removed while this waited): taking the lock above
        # made its file again.
        if not os.path.exists(self._record_path(cid)):
            self._remove_lock(cid)

    def _remove_lock(self, cid: str) -> None:
        try:
            os.unlink(os.path.join(self.locks_dir, cid))
        except FileNotFoundError:
            pass

    def count_restart(self, cid: str) -> None:
        with self._lock(cid):
            record = store.read_json(self._record_path(cid))
            if record is not None:
                record["restart_count"] = record.get("restart_count", 0) + 1
                self._save(record)

    def _finish(self, cid: str, wait_status: int | None, defer_release: bool = False) -> dict | None:
        state = store.read_json(self._state_path(cid))
        record = store.read_json(self._record_path(cid))
        cgroup = self._cgroup(cid)
        oom = False
        if cgroup.exists():
            try:
                oom = cgroup.stats().oom_kills > 0
            except (OSError, HakoError):
                oom = False
        if not defer_release:
            cgroup.remove()
        trash = None
        if record is not None and state is not None and record.get("ports"):
            self._unpublish(cid)
        if record is not None and state is not None:
            record["state"] = {
                "started_at": state["started_at"],
                "finished_at": time.time(),
                "exit_code": EXIT_UNKNOWN if wait_status is None else linux.exit_code(wait_status),
                "oom_killed": oom,
            }
            if record.get("auto_remove"):
                trash = self._remove_files(record, defer=defer_release)
                record = None
            else:
                self._save(record)
        self._remove_state(cid)
        if state is None:
            return None
        return {
            "stopping": bool(state.get("stopping")),
            "record": record,
            "restart_count": (record or {}).get("restart_count", 0),
            "trash": trash,
        }

    def _remove_state(self, cid: str) -> None:
        try:
            os.unlink(self._state_path(cid))
        except FileNotFoundError:
            pass

    def _clear_leftovers(self, cid: str, keep_cgroup: bool = False) -> None:
        """Before a start: release what a crashed owner left (cgroup, run-state)."""
        if os.path.exists(self._state_path(cid)):
            self._finish(cid, None, defer_release=keep_cgroup)
        if not keep_cgroup:
            cgroup = self._cgroup(cid)
            if cgroup.exists():
                cgroup.remove()

    def _wait_recorded(self, cid: str, timeout: float) -> bool:
        """Wait until the owner has recorded the exit (the run-state is gone)."""
        deadline = time.monotonic() + timeout
        path = self._state_path(cid)
        while os.path.exists(path):
            state = store.read_json(path)
            if state is not None and not self._owner_alive(state):
                with self._lock(cid):
                    if os.path.exists(path):
                        self._finish(cid, None)
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # Stop, kill, remove -----------------------------------------------------
    def stop(self, ref: str, timeout: int | None = None) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        state = self.run_state(cid)
        self._set_manual_stop(cid)
        if state is None:
            return record
        self._mark(cid, stopping=True)
        timeout = record.get("stop_timeout", 10) if timeout is None else timeout
        pid = state["pid"]
        self._signal(pid, state, record.get("stop_signal", signal.SIGTERM))
        if state.get("paused"):
            self.unpause(cid)
        if not wait_exit(pid, state["start_time"], timeout):
            self._cgroup(cid).kill_all(signal.SIGKILL)
            self._signal(pid, state, signal.SIGKILL)
            wait_exit(pid, state["start_time"], 10)
        self._wait_recorded(cid, 10)
        return self.load(cid)

    def kill(self, ref: str, signum: int = signal.SIGKILL) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        state = self.run_state(cid)
        if state is None:
            raise Conflict(f"container {record['name']} is not running")
        self._set_manual_stop(cid)
        self._mark(cid, stopping=True)
        self._signal(state["pid"], state, signum)
        if state.get("paused") and signum == signal.SIGKILL:
            # A frozen process dies of SIGKILL only once thawed.
            self._cgroup(cid).thaw()
            self._mark(cid, paused=False)
        if signum == signal.SIGKILL:
            wait_exit(state["pid"], state["start_time"], 10)
            self._wait_recorded(cid, 10)
        return record

    def _set_manual_stop(self, cid: str) -> None:
        """Note that a person stopped it: no restart policy may bring it back until started."""
        with self._lock(cid):
            record = store.read_json(self._record_path(cid))
            if record is not None and not record.get("manual_stop"):
                record["manual_stop"] = True
                self._save(record)

    @staticmethod
    def _signal(pid: int, state: dict, signum: int) -> None:
        if linux.process_start_time(pid) == state["start_time"]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _mark(self, cid: str, **fields) -> None:
        path = self._state_path(cid)
        with self._lock(cid):
            state = store.read_json(path)
            if state is not None:
                state.update(fields)
                store.write_json(path, state, sync=False)

    def remove(self, ref: str, force: bool = False) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        if self.run_state(cid) is not None:
            if not force:
                raise Conflict(f"container {record['name']} is running: stop it first or remove it with -f")
            self.kill(cid, signal.SIGKILL)
        with self._lock(cid):
            self._clear_leftovers(cid)
            if record.get("ports"):
                self._unpublish(cid)
            if record.get("storage_opts"):
                from .storage import wait_detached

                wait_detached(self.container_dir(cid))
            self._remove_files(record)
        self._remove_lock(cid)
        return record

    def _remove_files(self, record: dict, defer: bool = False) -> str | None:
        """Remove a container's name and directory.

        With ``defer`` the directory is only renamed out of sight (one
        rename) and its path returned, for the caller to delete later.
        """
        name_path = os.path.join(self.names_dir, record["name"])
        try:
            with open(name_path) as f:
                if f.read().strip() == record["id"]:
                    os.unlink(name_path)
        except FileNotFoundError:
            pass
        if record.get("networks"):
            left = self.networks().release(record["id"])
            self.refresh_hosts(left)
        if os.path.exists(os.path.join(self.root, "links.json")):
            from ..network.links import Links

            Links(self.root).forget_container(record["id"])
        directory = self.container_dir(record["id"])
        if defer:
            trash = os.path.join(self.containers_dir, TRASH_PREFIX + record["id"])
            try:
                os.rename(directory, trash)
                return trash
            except OSError:
                pass
        store.remove_tree(directory)
        return None

    # Pause -----------------------------------------------------------------
    def pause(self, ref: str) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        state = self.run_state(cid)
        if state is None:
            raise Conflict(f"container {record['name']} is not running")
        self._cgroup(cid).freeze()
        self._mark(cid, paused=True)
        return record

    def unpause(self, ref: str) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        state = self.run_state(cid)
        if state is None:
            raise Conflict(f"container {record['name']} is not running")
        if not state.get("paused"):
            raise Conflict(f"container {record['name']} is not paused")
        self._cgroup(cid).thaw()
        self._mark(cid, paused=False)
        return record

    # Exec ------------------------------------------------------------------
    def exec(
        self,
        ref: str,
        args: list[str],
        stdio: rt.Stdio,
        env: list[str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        privileged: bool = False,
        cap_add=(),
        cap_drop=(),
    ) -> rt.Spawned:
        """Start ``args`` inside a running container; the caller reaps it.

        The command has the container's privileges; ``privileged`` gives it
        every capability and no seccomp filter, ``cap_add``/``cap_drop``
        change the container's capability set for it alone.
        """
        from ..options import _parse_env, parse_user

        cid = self.resolve(ref)
        record = self.load(cid)
        state = self.run_state(cid)
        if state is None:
            raise Conflict(f"container {record['name']} is not running")
        if state.get("paused"):
            raise Conflict(f"container {record['name']} is paused: unpause it first")
        if not args:
            raise InvalidValue("command", args, "exec needs a command")
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidValue("workdir", workdir, "must be an absolute path")
        config = store.read_json(os.path.join(self.container_dir(cid), "config.json"))
        process = dict(config["process"])
        process["args"] = list(args)
        process["terminal"] = stdio.terminal
        process["env"] = oci._merge_env(process.get("env", []), _parse_env(env or []))
        if stdio.terminal:
            process["env"] = oci.with_terminal_env(process["env"])
        if workdir:
            process["cwd"] = workdir
        if user:
            process["user"] = user_spec(parse_user(user), record.get("group_add"))
        seccomp = None
        if privileged or cap_add or cap_drop:
            from .. import security

            seccomp, process = security.exec_privileges(record, process, privileged, cap_add, cap_drop)
        from ..runtime import process as rt

        return rt.spawn_exec(
            state["pid"], config, process, stdio, self._cgroup(cid), state["start_time"], seccomp=seccomp
        )

    # Limits ----------------------------------------------------------------
    def update(self, ref: str, restart_policy: str | None = None, **changes) -> dict:
        """Change limits, and the restart policy; a running container's cgroup is changed in place.

        The supervisor reads the restart policy from the record when the
        container exits, so a new policy needs no more than the record.
        """
        cid = self.resolve(ref)
        if restart_policy is not None:
            restart_policy = parse_restart_policy(restart_policy)
        with self._lock(cid):
            record = self.load(cid)
            if restart_policy is not None:
                record["restart_policy"] = restart_policy
            limits = {k: v for k, v in changes.items() if v not in (None, "")}
            if limits:
                old = record["limits"]
                new = merge_limits(old, limits)
                if self.run_state(cid) is not None:
                    cgroup = self._cgroup(cid)
                    resources = oci_resources(new)
                    for key, value in unlimited_resources(old, new).items():
                        resources.setdefault(key, value)
                    try:
                        cgroup.apply(resources)
                    except HakoError:
                        cgroup.apply(oci_resources(old))
                        raise
                record["limits"] = new
            self._save(record)
            return record

    # Reading ---------------------------------------------------------------
    def list(self, all: bool = True) -> list[tuple[dict, dict]]:
        """(record, status) of every container, newest first."""
        result = []
        for cid in self.ids():
            record = store.read_json(self._record_path(cid))
            if record is None:
                continue
            status = self.status(record)
            if all or status["status"] in ("running", "paused"):
                result.append((record, status))
        result.sort(key=lambda rs: rs[0]["created"], reverse=True)
        return result

    def stats(self, ref: str) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        if self.run_state(cid) is None:
            raise Conflict(f"container {record['name']} is not running")
        stats = self._cgroup(cid).stats()
        return {"id": cid, "name": record["name"], "stats": stats}

    def image_users(self) -> dict[str, list[dict]]:
        """Image ID -> records of the containers made from it (their roots stand on its layers)."""
        users: dict[str, list[dict]] = {}
        for cid in self.ids():
            try:
                record = self.load(cid)
            except HakoError:
                continue  # a container being removed right now
            users.setdefault(record["image_id"], []).append(record)
        return users

    def _graph_driver(self, record: dict) -> dict:
        """The overlay a container's root is (Docker's GraphDriver): its image's layers, its own."""
        from .storage import layer_dirs

        directory = self.container_dir(record["id"])
        try:
            lower = self.images.lower_dirs(self.images.get(record["image_id"]))
        except NotFound:
            lower = []
        upper, work = layer_dirs(directory, record)
        return {
            "Name": "overlay",
            "Data": {
                "LowerDir": ":".join(lower),
                "UpperDir": upper,
                "WorkDir": work,
                "MergedDir": os.path.join(directory, "rootfs"),
            },
        }

    def inspect(self, ref: str) -> dict:
        cid = self.resolve(ref)
        record = self.load(cid)
        status = self.status(record)
        config = store.read_json(os.path.join(self.container_dir(cid), "config.json"))
        result = {
            "Id": cid,
            "Name": record["name"],
            "Created": _iso(record["created"]),
            "Path": (config or {}).get("process", {}).get("args", [None])[0],
            "Args": (config or {}).get("process", {}).get("args", [])[1:],
            "Image": record["image_id"],
            "ImageName": record["image"],
            "State": {
                "Status": status["status"],
                "Running": status["status"] in ("running", "paused"),
                "Paused": status["status"] == "paused",
                "Pid": status["pid"],
                "ExitCode": status["exit_code"],
                "OOMKilled": status.get("oom_killed", False),
                "StartedAt": _iso(status["started_at"]),
                "FinishedAt": _iso(status["finished_at"]),
            },
            "Config": {
                "Hostname": record.get("hostname") or cid[:12],
                "User": record.get("user"),
                "Env": record["env"],
                "Cmd": record.get("command"),
                "Entrypoint": record.get("entrypoint"),
                "WorkingDir": record.get("workdir"),
                "Tty": record["tty"],
                "OpenStdin": record["interactive"],
                "Labels": record.get("labels", {}),
                "StopSignal": record.get("stop_signal"),
                "StopTimeout": record.get("stop_timeout"),
            },
            "HostConfig": {
                "Limits": record["limits"],
                "Namespaces": record["namespaces"],
                "UsernsMode": record["userns"],
                "Binds": record["volumes"],
                "Tmpfs": record["tmpfs"],
                "ReadonlyRootfs": record["read_only"],
                "AutoRemove": record["auto_remove"],
                "RestartPolicy": record["restart_policy"],
                "Sysctls": record.get("sysctls", {}),
                "Privileged": bool(record.get("privileged")),
                "CapAdd": record.get("cap_add") or [],
                "CapDrop": record.get("cap_drop") or [],
                "SecurityOpt": record.get("security_opt") or [],
                "GroupAdd": record.get("group_add") or [],
                "PortBindings": port_bindings(record.get("ports") or []),
                "Devices": docker_devices(record.get("devices") or []),
                "StorageOpt": record.get("storage_opts") or None,
            },
            "NetworkSettings": {
                "Ports": port_bindings(record.get("ports") or [])
                if status["status"] in ("running", "paused")
                else {},
                "Networks": {
                    e["network"]: {
                        "IPAddress": e["ip"],
                        "Interface": e["interface"],
                        "Aliases": e.get("aliases", []),
                    }
                    for e in record.get("networks", [])
                },
            },
            "RestartCount": record.get("restart_count", 0),
            "GraphDriver": self._graph_driver(record),
            "Bundle": self.container_dir(cid),
            "LogPath": self.log_path(cid),
        }
        if status["pid"]:
            result["Namespaces"] = namespace_report(status["pid"])
            cgroup = self._cgroup(cid)
            try:
                result["Cgroup"] = {
                    "Version": cgroup.version,
                    "Paths": cgroup.paths(),
                    "Resources": cgroup.read_resources(),
                }
            except HakoError:
                if self.run_state(cid) is not None:
                    raise
                # It stopped while we read: its cgroup went with it.
        return result


def port_bindings(ports: list[dict]) -> dict:
    """Published ports in Docker's shape: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}."""
    bindings: dict = {}
    for port in ports:
        key = f"{port['container_port']}/{port['protocol']}"
        bindings.setdefault(key, []).append({"HostIp": port["host_ip"], "HostPort": str(port["host_port"])})
    return bindings


def _host_interfaces() -> list[str]:
    try:
        return os.listdir("/sys/class/net")
    except OSError:
        return []


def _interface_alias(name: str) -> str:
    try:
        with open(f"/sys/class/net/{name}/ifalias") as f:
            return f.read().strip()
    except OSError:
        return ""


def image_user(image_config: dict) -> dict | None:
    """The image's USER (``name[:group]`` or ``uid[:gid]``) as --user gives it, or None."""
    value = (image_config.get("config") or {}).get("User") or None
    try:
        return parse_user(value)
    except InvalidValue:
        raise InvalidValue("image User", value, "expected uid[:gid] or name[:group]") from None


def user_spec(user: dict | None, groups=None) -> dict:
    """OCI process.user for --user and --group-add: numbers as they are; names are
    looked up by the runtime inside the container ("username"/"groupname"/
    "additionalGroups"), never here on the host, where the container's own
    /etc/passwd could be anything."""
    spec: dict = {"uid": 0, "gid": 0}
    numbers = [int(g) for g in groups or () if g.isdigit()]
    names = [g for g in groups or () if not g.isdigit()]
    if numbers:
        spec["additionalGids"] = numbers
    if names:
        spec["additionalGroups"] = names
    if not user:
        return spec
    if user["user"].isdigit():
        spec["uid"] = int(user["user"])
    else:
        spec["username"] = user["user"]
    group = user.get("group")
    if group:
        if group.isdigit():
            spec["gid"] = int(group)
        else:
            spec["groupname"] = group
    return spec


def namespace_report(pid: int) -> dict:
    """For each namespace kind: its path, inode, and whether it is the host's."""
    report = {}
    for kind, (_flag, proc_name) in linux.NAMESPACES.items():
        path = f"/proc/{pid}/ns/{proc_name}"
        try:
            inode = os.stat(path).st_ino
            host = os.stat(f"/proc/self/ns/{proc_name}").st_ino
        except FileNotFoundError:
            continue
        report[kind] = {"path": path, "inode": inode, "link": os.readlink(path), "host": inode == host}
    return report


def wait_exit(pid: int, start_time: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to exit; True once it has."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        # No pidfds (Linux before 5.3): look every few milliseconds.
        deadline = time.monotonic() + timeout
        while linux.process_alive(pid, start_time):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
    try:
        if linux.process_start_time(pid) != start_time:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if poller.poll(max(0, remaining) * 1000):
                return True
            if remaining <= 0:
                return False
    finally:
        os.close(fd)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1e6):06d}Z"


__all__ = ["ContainerOptions", "Engine"]
