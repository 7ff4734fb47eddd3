# Runs one of virtup's compiled modules as Ansible's default action does, and says in plain words why one could not start.
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible.plugins.action.normal import ActionModule as NormalAction

# What the binaries are linked against (objdump -T on a build): the oldest libvirt and glibc that resolve every symbol.
NEEDS = (
    "libvirt's client library (libvirt.so.0, libvirt 5.10 or later) and glibc 2.34 or later on the machine "
    "that runs the module (the hypervisor host of the play, localhost with connection: local): "
    "apt install libvirt0 (Debian, Ubuntu) or dnf install libvirt-libs (Fedora, RHEL, CentOS Stream)"
)


def explain_start_failure(result, module, host):
    """Replaces Ansible's "Module result deserialization failed" for a binary the loader or kernel refused.

    The binary prints nothing when the dynamic loader cannot give it libvirt, so Ansible only sees rc 127 and no JSON;
    the loader's own line (in module_stderr, or module_stdout over SSH) is quoted, and both are kept.
    """
    # The loader exits 127 and the shell 126 (or dash 2) for a binary it cannot run; any other status is the module's.
    if not result.get("failed") or result.get("rc") not in (2, 126, 127):
        return result
    stdout = result.get("module_stdout", "")
    # A module that started answers with JSON on stdout; over SSH (a binary module runs with a tty, never
    # pipelined) the loader's line arrives on stdout instead of stderr, so both are read.
    if stdout.lstrip().startswith("{"):
        return result
    stderr = "\n".join((stdout, result.get("module_stderr", "")))
    if result.get("rc") == 127 and ("error while loading shared libraries" in stderr or "version `" in stderr):
        line = next(
            (
                ln
                for ln in stderr.splitlines()
                if "error while loading shared libraries" in ln or "version `" in ln
            ),
            stderr.strip(),
        )
        # The loader names the binary by its temporary path; the library and the reason are what matter.
        reason = line.strip().split(": ", 1)[1] if ": " in line else line.strip()
        result["msg"] = "%s could not start on %s: %s. The virtup modules need %s." % (module, host, reason, NEEDS)
        result.pop("exception", None)
    elif "Exec format error" in stderr or "cannot execute binary file" in stderr:
        line = next(ln for ln in stderr.splitlines() if "Exec format error" in ln or "cannot execute binary" in ln)
        result["msg"] = (
            "%s could not start on %s: the virtup module binaries run only on Linux of the architecture that built "
            "them (scripts/build --collection on x86_64 makes x86_64 binaries): %s" % (module, host, line.strip())
        )
        result.pop("exception", None)
    return result


class ActionModule(NormalAction):
    """The default action (check mode, async and all), with a clear message when the binary cannot start."""

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module = self._task.action.rsplit(".", 1)[-1]
        host = (task_vars or {}).get("inventory_hostname", "the target")
        return explain_start_failure(result, module, host)
