"""The memory limit the trainer plans with: environment override, cgroup v1/v2, RAM."""

import pytest

from lf_widgets._memory import memory_limit, parse_size

GIB = 2**30


def test_parse_size():
    assert parse_size("2G") == parse_size("2GiB") == parse_size("2 gb") == 2 * GIB
    assert parse_size("1536M") == 1536 * 2**20 and parse_size("1.5G") == int(1.5 * GIB)
    assert parse_size("2147483648") == 2 * GIB
    with pytest.raises(ValueError, match="LF_WIDGETS_MEMORY_LIMIT='two'"):
        parse_size("two")


def _fake(tmp_path, cgroup_lines, files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text("\n".join(cgroup_lines) + "\n")
    root = tmp_path / "sys"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


def test_cgroup_v2_limit_of_the_group_or_a_parent(tmp_path, monkeypatch):
    monkeypatch.delenv("LF_WIDGETS_MEMORY_LIMIT", raising=False)
    proc, root = _fake(tmp_path, ["0::/kubepods/pod1/jupyter"],
                       {"kubepods/pod1/jupyter/memory.max": "max\n",
                        "kubepods/pod1/memory.max": f"{2 * GIB}\n"})
    assert memory_limit(proc_cgroup=proc, cgroup_root=root) == 2 * GIB
    proc, root = _fake(tmp_path / "none", ["0::/"], {"memory.max": "max\n"})
    limit = memory_limit(proc_cgroup=proc, cgroup_root=root)
    assert limit is not None and limit > 2 * GIB  # no cgroup limit: the machine's RAM


def test_cgroup_v1_limit_also_when_the_mount_shows_the_container_root(tmp_path, monkeypatch):
    monkeypatch.delenv("LF_WIDGETS_MEMORY_LIMIT", raising=False)
    proc, root = _fake(tmp_path, ["4:memory:/docker/abc", "3:cpu:/docker/abc"],
                       {"memory/memory.limit_in_bytes": f"{3 * GIB}\n"})  # the host path is absent
    assert memory_limit(proc_cgroup=proc, cgroup_root=root) == 3 * GIB


def test_environment_overrides_detection(tmp_path, monkeypatch):
    monkeypatch.setenv("LF_WIDGETS_MEMORY_LIMIT", "1536M")
    assert memory_limit(proc_cgroup=tmp_path / "missing") == 1536 * 2**20
    monkeypatch.setenv("LF_WIDGETS_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="not a size"):
        memory_limit()


def test_cpu_quota_v2_of_the_group_or_a_parent(tmp_path):
    from lf_widgets._memory import cpu_limit

    proc, root = _fake(tmp_path, ["0::/kubepods/pod1/jupyter"],
                       {"kubepods/pod1/jupyter/cpu.max": "max 100000\n",
                        "kubepods/pod1/cpu.max": "150000 100000\n",  # 1.5 CPUs
                        "cpu.max": "max 100000\n"})
    assert cpu_limit(proc_cgroup=proc, cgroup_root=root, affinity=set(range(16))) == 1.5
    # no quota anywhere: the affinity mask decides (taskset, cpuset)
    proc, root = _fake(tmp_path / "none", ["0::/"], {"cpu.max": "max 100000\n"})
    assert cpu_limit(proc_cgroup=proc, cgroup_root=root, affinity={2, 5, 7}) == 3


def test_cpu_quota_v1_under_the_joint_cpu_cpuacct_mount(tmp_path):
    from lf_widgets._memory import cpu_limit

    proc, root = _fake(tmp_path, ["4:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc"],
                       {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
                        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
                        "cpu,cpuacct/docker/cpu.cfs_quota_us": "50000\n",  # a parent: 0.5 CPU
                        "cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n"})
    assert cpu_limit(proc_cgroup=proc, cgroup_root=root, affinity={0, 1, 2, 3}) == 0.5
    # the container's own group shown at the mount's root, the host path absent
    proc, root = _fake(tmp_path / "root", ["2:cpu:/docker/abc"],
                       {"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cpu_limit(proc_cgroup=proc, cgroup_root=root, affinity={0, 1, 2, 3}) == 2


def test_cpu_limit_of_this_process_is_at_most_its_affinity():
    import os

    from lf_widgets._memory import cpu_limit

    limit = cpu_limit()
    assert limit is not None and 0 < limit <= len(os.sched_getaffinity(0))
