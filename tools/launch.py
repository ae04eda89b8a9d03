#!/usr/bin/env python
"""Launch a data-parallel job on MXNet's parameter server (``--kv-store dist_sync|dist_async|
dist_device_sync``): one scheduler, S servers and N workers, on this host (``--launcher local``) or
on the hosts of a host file over ssh (``--launcher ssh``). Flags follow mxnet's tools/launch.py.

    python tools/launch.py -n 2 -s 1 --launcher local --loopback --timeout 3600 \\
        .venv/bin/python cifar/train_cifar.py --kv-store dist_sync ...
    python tools/launch.py -n 4 -H hosts --launcher ssh --sync-dst-dir /tmp/mxrepro \\
        python imagenet/train_blnet.py --kv-store dist_device_sync ...

Unlike mxnet's launcher, every process is supervised: its output is prefixed with its role and
rank, and when a worker exits non-zero, a server or the scheduler dies, or ``--timeout`` passes,
the whole job is stopped (SIGTERM, then SIGKILL, per process group) with a message naming the
process, its exit code and the tail of its output; the launcher then exits non-zero. See
docs/distributed.md. The wheel's ``dmlc_tracker`` is used for the host address (with the
``Thread.isAlive`` shim it needs on Python >= 3.9); processes are started here, not by its threads.
"""
import argparse
import os
import shlex
import signal
import sys

from mxrepro import launcher as dist  # no mxnet import (see mxrepro/launcher.py)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything after the first positional argument is the command each worker runs. "
               "Exit status: 0 when every worker exits 0, the failing worker's status on failure, "
               "124 on --timeout, 130 when interrupted.")
    p.add_argument("-n", "--num-workers", required=True, type=int, help="number of worker processes")
    p.add_argument("-s", "--num-servers", type=int,
                   help="number of server processes (default: NUM_WORKERS, as mxnet's launcher)")
    p.add_argument("-H", "--hostfile", help="host file for --launcher ssh: one host[:ssh_port] per line")
    p.add_argument("--launcher", choices=["local", "ssh"],
                   help="local: every process on this host; ssh: servers and workers on the hosts of "
                        "--hostfile, scheduler here (default: ssh with -H, else local)")
    p.add_argument("--loopback", action="store_true",
                   help="local mode: bind everything to 127.0.0.1 (same as --host-ip 127.0.0.1). "
                        "Without it the tracker picks this host's outgoing interface address")
    p.add_argument("--host-ip", default=None,
                   help="address of the scheduler (local mode: of every process); an address or "
                        "auto/ip/dns as in dmlc_tracker (default auto)")
    p.add_argument("--env", action="append", default=[], metavar="K:V",
                   help="set K=V for every process (K alone passes this shell's value; repeatable)")
    p.add_argument("--env-worker", action="append", default=[], metavar="K:V", help="as --env, workers only")
    p.add_argument("--env-server", action="append", default=[], metavar="K:V",
                   help="as --env, servers and scheduler only")
    p.add_argument("--sync-dst-dir", help="ssh mode: rsync the current directory to this directory on "
                                          "every host first and run there (default: run in the "
                                          "current directory's path on each host)")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds after which the whole job is stopped and counted as failed "
                        "(default 0: no limit; failures still stop the job at once)")
    p.add_argument("--grace", type=float, default=30,
                   help="seconds the servers and scheduler get to exit after the workers finish "
                        "(default 30)")
    p.add_argument("--term-grace", type=float, default=5,
                   help="seconds between SIGTERM and SIGKILL when stopping (default 5)")
    p.add_argument("--ssh", default="ssh", help="ssh client command for --launcher ssh (default ssh)")
    p.add_argument("--server-command", default=None,
                   help="what servers and scheduler run (default: the command's Python with "
                        "-c 'import mxnet', or the command itself when it does not start with python)")
    p.add_argument("--dry-run", action="store_true", help="print the processes and their DMLC_* "
                                                          "environment, start nothing")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the worker command")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    command = dist.normalize_command(args.command)
    if args.num_workers < 1:
        raise SystemExit("error: -n/--num-workers must be >= 1")
    if args.num_servers is None:
        args.num_servers = args.num_workers
    if args.num_servers < 1:
        raise SystemExit("error: -s/--num-servers must be >= 1 (the dist kvstores need a server)")
    launcher = args.launcher or ("ssh" if args.hostfile else "local")
    env = dist.parse_env_pairs(args.env, "--env")
    env_worker = dist.parse_env_pairs(args.env_worker, "--env-worker")
    env_server = dist.parse_env_pairs(args.env_server, "--env-server")
    dist.patch_dmlc_tracker()

    if launcher == "local":
        if args.hostfile:
            raise SystemExit("error: --hostfile is for --launcher ssh (local mode runs everything here)")
        ip = dist.host_ip(args.host_ip, loopback=args.loopback)
        jobs = dist.local_jobs(command, args.num_workers, args.num_servers, ip, env, env_worker,
                               env_server, server_cmd=args.server_command)
        where = "this host, %s" % ip
    else:
        if not args.hostfile:
            raise SystemExit("error: --launcher ssh needs -H/--hostfile (one host[:port] per line); "
                             "for one machine use --launcher local")
        hosts = dist.parse_hostfile(args.hostfile)
        ip = dist.host_ip(args.host_ip, loopback=args.loopback)
        workdir = args.sync_dst_dir or os.getcwd()
        jobs = dist.ssh_jobs(command, args.num_workers, args.num_servers, hosts, ip, workdir,
                             ssh=args.ssh, env=env, env_worker=env_worker, env_server=env_server,
                             server_cmd=args.server_command)
        where = "%d host(s) over ssh, scheduler on %s" % (len(hosts), ip)
        if args.sync_dst_dir and not args.dry_run:
            dist.sync_dir(os.getcwd(), hosts, args.sync_dst_dir, ssh=args.ssh)

    if args.dry_run:
        for j in jobs:
            dmlc = " ".join("%s=%s" % kv for kv in sorted(j.env.items())
                            if kv[0].startswith("DMLC_") or kv[0] == "OMP_NUM_THREADS")
            print("%-12s %s %s" % (j.name, dmlc, shlex.join(j.argv)))
        return 0

    sup = dist.Supervisor(term_grace=args.term_grace)
    sched = jobs[0].env.get("DMLC_PS_ROOT_PORT")
    threads = sorted({j.env.get("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "?"))
                      for j in jobs if j.role == "worker"})
    sup._say("%d worker(s) + %d server(s) + scheduler on %s, scheduler port %s, "
             "OMP_NUM_THREADS per worker %s, %s"
             % (args.num_workers, args.num_servers, where, sched, "/".join(threads) or "(remote default)",
                "time limit %.0f s" % args.timeout if args.timeout else "no time limit (--timeout)"))

    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    try:
        for j in jobs:
            sup.start(j)
    except KeyboardInterrupt:
        sup.stop("interrupted")
        return 130
    return sup.run(timeout=args.timeout or None, grace=args.grace)


if __name__ == "__main__":
    sys.exit(main())
