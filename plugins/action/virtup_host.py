# The action of virtup_host: Ansible's default one, with a clear message when its compiled binary cannot start.
from __future__ import annotations

from ansible_collections.virtup.virtup.plugins.plugin_utils.binary_module import ActionModule  # noqa: F401
