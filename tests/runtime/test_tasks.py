import asyncio

from liveface.runtime.tasks import TaskSet


async def test_aclose_cancels_and_waits_and_failures_are_reported():
    errors = []
    tasks = TaskSet(on_error=errors.append)
    done = asyncio.Event()

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            done.set()

    async def boom():
        raise ValueError("boom")

    tasks.spawn(forever())
    tasks.spawn(boom())
    await asyncio.sleep(0.01)
    assert [type(e) for e in errors] == [ValueError]
    assert len(tasks) == 1
    await tasks.aclose()
    assert done.is_set()
    assert len(tasks) == 0


async def test_a_task_may_close_its_own_owner():
    tasks = TaskSet()

    async def closer():
        await tasks.aclose()  # must not cancel or await itself
        return "ok"

    t = tasks.spawn(closer())
    assert await t == "ok"


async def test_wait_lets_tasks_finish_including_ones_they_spawn():
    tasks = TaskSet()
    done = []

    async def child():
        await asyncio.sleep(0)
        done.append("child")

    async def parent():
        await asyncio.sleep(0)
        tasks.spawn(child())
        done.append("parent")

    tasks.spawn(parent())
    await tasks.wait()
    assert done == ["parent", "child"]
    assert len(tasks) == 0
