# The action of virtup_template: Ansible's default one, with a clear message when its compiled binary cannot start.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

try:
    from ansible_collections.virtup.virtup.plugins.plugin_utils.binary_module import ActionModule as _Action
except ImportError:
    # A short name in a checkout whose collections path does not reach virtup.virtup: Ansible's own action.
    from ansible.plugins.action.normal import ActionModule as _Action


class ActionModule(_Action):
    """Runs virtup_template."""
