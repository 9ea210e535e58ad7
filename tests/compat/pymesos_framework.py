"""A framework written against pymesos 0.3.15 (a published Mesos v1 client), unchanged.

Launches one task on the first offer, declines the rest, kills a second long task, and exits 0
once it has seen TASK_FINISHED for the first and TASK_KILLED for the second.
Usage: pymesos_framework.py MASTER_HOST:PORT [PRINCIPAL SECRET]
With a principal and secret, pymesos authenticates with HTTP basic (its `principal`/`secret`).
"""
import sys
import threading

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler

seen = {}
done = threading.Event()


def task(offer, task_id, command):
    t = Dict()
    t.task_id.value = task_id
    t.agent_id.value = offer.agent_id.value
    t.name = task_id
    t.command.value = command
    t.resources = [
        dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
        dict(name="mem", type="SCALAR", scalar={"value": 32}),
    ]
    return t


class Compat(Scheduler):
    launched = False

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer.id, Dict(refuse_seconds=30))
                continue
            self.launched = True
            driver.launchTasks(
                offer.id,
                [task(offer, "py-finish", "echo hello-pymesos; sleep 1"),
                 task(offer, "py-kill", "sleep 300")],
                Dict(refuse_seconds=30),
            )

    def statusUpdate(self, driver, update):
        print("UPDATE", update.task_id.value, update.state, flush=True)
        # A task in its own container network says where it is (Mesos's ContainerStatus).
        for n in (update.get("container_status") or {}).get("network_infos") or []:
            for a in n.get("ip_addresses") or []:
                print("ADDRESS", update.task_id.value, a.get("ip_address"), flush=True)
        seen.setdefault(update.task_id.value, []).append(update.state)
        if update.task_id.value == "py-kill" and update.state == "TASK_RUNNING":
            driver.killTask(update.task_id)
        if "TASK_FINISHED" in seen.get("py-finish", []) and "TASK_KILLED" in seen.get("py-kill", []):
            done.set()


def main():
    framework = Dict()
    framework.user = "root"
    framework.name = "pymesos-compat"
    framework.hostname = "localhost"
    principal, secret = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else (None, None)
    if principal:
        framework.principal = principal
    driver = MesosSchedulerDriver(Compat(), framework, sys.argv[1], use_addict=True,
                                  principal=principal, secret=secret)
    driver.start()
    ok = done.wait(60)
    driver.stop()
    driver.join()
    print("RESULT", "ok" if ok else "timeout", seen, flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
