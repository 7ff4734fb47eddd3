# Inventory plugin virtup.virtup.virtup: virtup's templates and instances from the virtup_inventory binary, shaped with Ansible's constructed options and cached.
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
  - Warnings of the listing (a damaged metadata file, an unreachable hypervisor) are shown as Ansible warnings.
author: virtup developers
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
  virtup_mem_gib: virtup_memory_mib | int // 1024
groups:
  big: virtup_memory_mib | int >= 4096
keyed_groups:
  - key: virtup_template
    prefix: tpl
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/virtup-inventory
cache_timeout: 60
"""

import json
import os
import subprocess

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var

# The binary beside the collection's roles: `<collection>/virtup_inventory` (scripts/build puts it there).
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "virtup_inventory")


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

    def _listing(self):
        """The script's --list document; its environment carries the options (never a command line)."""
        exe = self.get_option("executable") or os.path.normpath(SHIPPED)
        env = dict(os.environ)
        for option, var in (("data_home", "VIRTUP_DATA_HOME"), ("config_home", "VIRTUP_CONFIG_HOME")):
            if self.get_option(option):
                env[var] = self.get_option(option)
        if self.get_option("uris"):
            env["VIRTUP_INVENTORY_URIS"] = " ".join(self.get_option("uris"))
        try:
            run = subprocess.run([exe, "--list"], env=env, capture_output=True, text=True, check=False, timeout=600)
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
        if not isinstance(doc, dict):
            raise AnsibleParserError("%s --list printed no JSON object" % exe)
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
        for host, variables in hostvars.items():
            self.inventory.add_host(host)
            for key, value in variables.items():
                self.inventory.set_variable(host, key, value)
        strict = self.get_option("strict")
        for host in hostvars:
            # As in Ansible's own plugins: the host's variables with inventory_hostname and group_names, and the
            # groups and keyed groups see the composed ones too.
            variables = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
            variables = self.inventory.get_host(host).get_vars()
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        doc = None
        if use_cache:
            try:
                doc = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if doc is None:
            doc = self._listing()
        if update_cache:
            self._cache[cache_key] = doc
        self._populate(doc)
