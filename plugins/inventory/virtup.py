# Inventory plugin virtup.virtup.virtup: what virtup made, from virtup_inventory, with constructed options and caching.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: virtup
short_description: virtup's templates and instances, with Ansible's constructed groups and caching
description:
  - Lists what virtup made on its hypervisors, as the C(virtup_inventory) script does (it runs that binary once and
    reads its C(--list) document). That is the groups C(virtup_instances), C(virtup_templates), C(virtup_running),
    C(virtup_stopped), C(virtup_suspended), one per template and per hypervisor, and the groups each instance
    declared (C(groups) of virtup_instance), with each host's variables (C(ansible_host), C(ansible_user), the pinned
    C(known_hosts) file, C(virtup_*)).
  - On top, Ansible's constructed features (C(compose), C(groups), C(keyed_groups)) and inventory caching.
  - The configuration file's name must end in C(.virtup.yml) or C(.virtup.yaml).
  - Warnings of the listing (a damaged metadata file, an unreachable hypervisor) are shown as Ansible warnings, and a
    listing with warnings is not cached, so a hypervisor that was down is asked again on the next run.
  - The cache key covers this file, the options, and the C(VIRTUP_*), C(HOME), C(XDG_DATA_HOME), C(XDG_CONFIG_HOME),
    C(XDG_RUNTIME_DIR) and C(LIBVIRT_DEFAULT_URI) values the listing used, so another data dir or hypervisor list
    given there never answers from the cache of this one. A change inside virt-up's config files (its
    C(inventory-uris)) is not seen by the key; C(ansible-inventory --flush-cache) asks again.
author: virtup developers (!UNKNOWN)
version_added: 0.1.0
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: This plugin's name, so that Ansible's C(auto) plugin loads it.
    required: true
    choices: [virtup.virtup.virtup]
    type: str
  uris:
    description:
      - The hypervisors to list, as libvirt URIs.
      - When not set, those of C(VIRTUP_INVENTORY_URIS), else the config's C(inventory-uris), else the default URI
        together with every URI virtup's records name (as the script does).
    type: list
    elements: str
    env:
      - name: VIRTUP_INVENTORY_URIS
  data_home:
    description: virtup's data directory (metadata, pinned host keys); default C($XDG_DATA_HOME/virt-up).
    type: path
    env:
      - name: VIRTUP_DATA_HOME
  config_home:
    description: virtup's config directory; default C($XDG_CONFIG_HOME/virt-up).
    type: path
    env:
      - name: VIRTUP_CONFIG_HOME
  executable:
    description: The C(virtup_inventory) binary to run; default the one shipped at this collection's root.
    type: path
"""

EXAMPLES = r"""
# virtup.virtup.yml: ansible-inventory -i virtup.virtup.yml --graph
plugin: virtup.virtup.virtup
uris: [qemu:///system, qemu+ssh://root@hv2/system]
strict: true
compose:
  virtup_short: inventory_hostname.split('.')[0]
groups:
  webs: "'web' in inventory_hostname"
  stopped_instances: virtup_kind == 'instance' and virtup_state == 'stopped'
keyed_groups:
  - key: virtup_template
    prefix: tpl
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/virtup-inventory
cache_timeout: 60
"""

import hashlib
import json
import os
import subprocess

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var
from ansible.utils.vars import combine_vars

# The binary beside the collection's roles: `<collection>/virtup_inventory` (scripts/build puts it there).
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "virtup_inventory")


def _check_shape(doc, exe):
    """The document the script protocol defines, or an error naming what is wrong (never a half-read inventory)."""
    def bad(what):
        raise AnsibleParserError("%s --list printed a document Ansible cannot read: %s" % (exe, what))

    if not isinstance(doc, dict):
        bad("not a JSON object")
    for name, body in doc.items():
        if name == "_meta":
            if not isinstance(body, dict) or not isinstance(body.get("hostvars", {}), dict):
                bad("_meta.hostvars is not an object")
            if any(not isinstance(v, dict) for v in body.get("hostvars", {}).values()):
                bad("a host's variables in _meta.hostvars are not an object")
            if not isinstance(body.get("virtup_warnings", []), list):
                bad("_meta.virtup_warnings is not a list")
            continue
        if not isinstance(body, dict):
            bad("group %s is not an object" % name)
        for key, kind in (("hosts", list), ("children", list), ("vars", dict)):
            if not isinstance(body.get(key, kind()), kind):
                bad("%s of group %s is not a %s" % (key, name, kind.__name__))


def _unsafe(value):
    """The script marks every value from metadata or a guest as {"__ansible_unsafe": ...}: never templated."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return wrap_var(value["__ansible_unsafe"])
        return {k: _unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsafe(v) for v in value]
    return value


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "virtup.virtup.virtup"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith((".virtup.yml", ".virtup.yaml"))

    def _environment(self):
        """The binary, and its environment: the options go there (a URI may carry credentials: never on argv)."""
        exe = self.get_option("executable") or os.path.normpath(SHIPPED)
        env = dict(os.environ)
        for option, var in (("data_home", "VIRTUP_DATA_HOME"), ("config_home", "VIRTUP_CONFIG_HOME")):
            if self.get_option(option):
                env[var] = self.get_option(option)
        if self.get_option("uris"):
            env["VIRTUP_INVENTORY_URIS"] = " ".join(self.get_option("uris"))
        return exe, env

    def _cache_key(self, path, exe, env):
        """Ansible's key for this file, and a digest of what the listing depends on beyond it."""
        used = sorted(
            (k, v)
            for k, v in env.items()
            if k.startswith("VIRTUP_")
            or k in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "LIBVIRT_DEFAULT_URI")
        )
        digest = hashlib.sha256(json.dumps([exe, used]).encode()).hexdigest()[:16]
        return "%s_%s" % (self.get_cache_key(path), digest)

    def _listing(self, exe, env):
        """The script's --list document."""
        try:
            run = subprocess.run(
                [exe, "--list"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                timeout=600,
            )
        except OSError as e:
            raise AnsibleParserError("cannot run %s: %s" % (exe, e))
        except subprocess.TimeoutExpired:
            raise AnsibleParserError("%s --list did not answer within 600 s" % exe)
        if run.returncode != 0:
            raise AnsibleParserError(
                "%s --list failed (exit %d): %s" % (exe, run.returncode, run.stderr.strip() or run.stdout.strip())
            )
        try:
            doc = json.loads(run.stdout)
        except ValueError as e:
            raise AnsibleParserError("%s --list printed no JSON document: %s" % (exe, e))
        _check_shape(doc, exe)
        return doc

    def _populate(self, doc):
        doc = _unsafe(doc)
        meta = doc.get("_meta", {})
        hostvars = meta.get("hostvars", {})
        for warning in meta.get("virtup_warnings", []):
            self.display.warning("virtup inventory: %s" % warning)
        groups = {name: body for name, body in doc.items() if name != "_meta" and isinstance(body, dict)}
        for name in groups:
            self.inventory.add_group(name)
        for name, body in groups.items():
            for host in body.get("hosts", []):
                self.inventory.add_host(host, group=name)
            for child in body.get("children", []):
                self.inventory.add_group(child)
                self.inventory.add_child(name, child)
            for key, value in body.get("vars", {}).items():
                self.inventory.set_variable(name, key, value)
        # As Ansible's script plugin: variables of hosts the groups list, never a host only _meta names.
        hostvars = {host: variables for host, variables in hostvars.items() if host in self.inventory.hosts}
        for host, variables in hostvars.items():
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
        strict = self.get_option("strict")
        for host in hostvars:
            # As in ansible.builtin.constructed: group vars under the host's own (with inventory_hostname), and the
            # groups and keyed groups see the composed ones too.
            variables = self._vars_of(host)
            self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
            variables = self._vars_of(host)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def _vars_of(self, host):
        entry = self.inventory.get_host(host)
        # Hosts join `all` only when Ansible reconciles the inventory, after every source: its vars are added here.
        groups = [self.inventory.groups["all"]] + [g for g in entry.get_groups() if g.name != "all"]
        return combine_vars(get_group_vars(groups), entry.get_vars())

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        exe, env = self._environment()
        cache_key = self._cache_key(path, exe, env)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        doc = None
        if use_cache:
            try:
                doc = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if doc is None:
            doc = self._listing(exe, env)
        # A listing with warnings (a hypervisor down, a damaged record) is not kept: the next run asks again.
        if update_cache and not doc.get("_meta", {}).get("virtup_warnings"):
            self._cache[cache_key] = doc
        self._populate(doc)
