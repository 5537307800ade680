"""Interactive containers: -it, exec -it and attach, driven through a real pseudo-terminal."""

from __future__ import annotations

import json

from ..conftest import hako, wait_for


def test_run_it_gives_a_real_terminal_inside(terminal, containers):
    containers.append("tty1")
    t = terminal("run", "-it", "--name", "tty1", "busybox", "sh")
    t.send("tty; echo TERM=$TERM; stty size\n")
    screen = t.expect("TERM=xterm")
    assert "/dev/pts/0" in screen
    t.send("exit 5\n")
    assert t.wait() == 5
    assert json.loads(hako("inspect", "tty1").stdout)[0]["State"]["ExitCode"] == 5
    # What appeared on the terminal is in the log too.
    assert "TERM=xterm" in hako("logs", "tty1").stdout


def test_exec_it_opens_a_shell_in_a_running_container(terminal, run_detached):
    name, _ = run_detached("--hostname", "box", "busybox", "sleep", "60")
    t = terminal("exec", "-it", name, "sh")
    t.send("hostname; tty; ps -o pid,args | grep -c sleep\n")
    screen = t.expect("/dev/pts/")
    assert "box" in screen
    t.send("exit\n")
    assert t.wait() == 0


def test_attach_to_a_detached_terminal_and_detach_with_ctrl_p_ctrl_q(terminal, run_detached):
    name, _ = run_detached("-it", "busybox", "sh")
    t = terminal("attach", name)
    t.send("echo attached-$((6*7))\n")
    t.expect("attached-42")
    t.send("\x10\x11")
    assert t.wait() == 0
    assert "Up" in hako("ps").stdout  # detaching leaves it running
    assert "attached-42" in hako("logs", name).stdout
    # Attach again and end the shell: attach returns its exit code.
    again = terminal("attach", name)
    again.send("exit 3\n")
    assert again.wait() == 3
    wait_for(lambda: "Exited (3)" in hako("ps", "-a").stdout)


def test_attach_to_a_non_terminal_container_follows_its_output(terminal, run_detached):
    name, _ = run_detached("-i", "busybox", "sh", "-c", "while read line; do echo got:$line; done")
    t = terminal("attach", name)
    t.send("hello\n")
    t.expect("got:hello")
    hako("stop", "-t", "0", name)
    t.wait()


def test_interactive_foreground_without_a_terminal_reads_stdin():
    out = hako("run", "--rm", "-i", "busybox", "sh", "-c", "read a; echo got:$a", input="value\n")
    assert out.stdout == "got:value\n"
    without = hako("run", "--rm", "busybox", "sh", "-c", "cat; echo done", input="ignored\n")
    assert without.stdout == "done\n"
