import ElasticCore
import Testing

@Suite struct CheckpointScheduleTests {
    let plan = Plan(generation: 3, stages: [0..<2, 2..<5], replicas: 2, nodes: [["a", "b"], ["c", "d"]], spares: [])

    @Test func aCheckpointIsDueEveryNStepsAndAtTheEnd() {
        var schedule = CheckpointSchedule(every: 10)
        #expect(schedule.onCommitted(applied: 9, totalSteps: 25, plan: plan) == nil)
        // The first replica of each stage writes.
        #expect(schedule.onCommitted(applied: 10, totalSteps: 25, plan: plan) == .request(step: 10, writers: [0: "a", 1: "c"]))
        // Due again while step 10 is still being written: skipped, never corrupted.
        #expect(schedule.onCommitted(applied: 20, totalSteps: 25, plan: plan) == .skipped(step: 20, reason: "the checkpoint of step 10 is still being written"))
        #expect(schedule.onWritten(node: "a", step: 10, stage: 0, error: nil, rawBytes: 100, storedBytes: 80) == nil)
        // A report from a node that is not the stage's writer, or for another step, is ignored.
        #expect(schedule.onWritten(node: "d", step: 10, stage: 1, error: nil, rawBytes: 1, storedBytes: 1) == nil)
        #expect(schedule.onWritten(node: "c", step: 9, stage: 1, error: nil, rawBytes: 1, storedBytes: 1) == nil)
        guard case .complete(let done)? = schedule.onWritten(node: "c", step: 10, stage: 1, error: nil, rawBytes: 200, storedBytes: 150) else {
            Issue.record("expected the checkpoint to complete")
            return
        }
        #expect(done.step == 10 && done.generation == 3 && done.rawBytes == 300 && done.storedBytes == 230 && schedule.pending == nil)
        schedule.onCommitted(checkpoint: 10, path: "/c/step-00000010")
        // The last step is always checkpointed, even off the period…
        #expect(schedule.onCommitted(applied: 25, totalSteps: 25, plan: plan) == .request(step: 25, writers: [0: "a", 1: "c"]))
        // …and when it comes due while another is being written, it waits for that one.
        var busy = CheckpointSchedule(every: 10)
        _ = busy.onCommitted(applied: 20, totalSteps: 22, plan: plan)
        #expect(busy.onCommitted(applied: 22, totalSteps: 22, plan: plan) == .skipped(step: 22, reason: "deferred until the checkpoint of step 20 is written"))
        #expect(busy.resumeDeferred(plan: plan) == nil)
        _ = busy.onWritten(node: "a", step: 20, stage: 0, error: nil, rawBytes: 1, storedBytes: 1)
        guard case .complete? = busy.onWritten(node: "c", step: 20, stage: 1, error: nil, rawBytes: 1, storedBytes: 1) else {
            Issue.record("expected step 20 to complete")
            return
        }
        #expect(busy.resumeDeferred(plan: plan) == .request(step: 22, writers: [0: "a", 1: "c"]) && busy.deferredFinal == nil)
    }

    @Test func withoutAPeriodOnlyTheEndIsCheckpointed() {
        var schedule = CheckpointSchedule(every: nil)
        #expect((1..<50).allSatisfy { schedule.onCommitted(applied: $0, totalSteps: 50, plan: plan) == nil })
        #expect(schedule.onCommitted(applied: 50, totalSteps: 50, plan: plan) == .request(step: 50, writers: [0: "a", 1: "c"]))
    }

    @Test func aFailedOrLostWriterAbandonsTheCheckpoint() {
        var schedule = CheckpointSchedule(every: 5)
        _ = schedule.onCommitted(applied: 5, totalSteps: 100, plan: plan)
        #expect(schedule.onWritten(node: "a", step: 5, stage: 0, error: "no space left on device", rawBytes: 0, storedBytes: 0)
            == .abandoned(step: 5, reason: "a could not write stage 0: no space left on device"))
        #expect(schedule.pending == nil)
        _ = schedule.onCommitted(applied: 10, totalSteps: 100, plan: plan)
        _ = schedule.onWritten(node: "a", step: 10, stage: 0, error: nil, rawBytes: 1, storedBytes: 1)
        // a wrote its part and may go; c may not.
        #expect(schedule.onMembership(live: ["b", "c", "d"]) == nil)
        #expect(schedule.onMembership(live: ["a", "b", "d"]) == .abandoned(step: 10, reason: "c, the writer of stage 1, is gone"))
        // A step at or before the newest checkpoint is never written twice (after a resume).
        schedule.onCommitted(checkpoint: 40, path: "/c/step-00000040")
        #expect(schedule.onCommitted(applied: 40, totalSteps: 100, plan: plan) == nil)
        #expect(schedule.onCommitted(applied: 45, totalSteps: 100, plan: plan) == .request(step: 45, writers: [0: "a", 1: "c"]))
    }
}

@Suite struct CoordinatorCheckpointTests {
    func commit(_ coordinator: inout TrainingCoordinator, step: Int, plan: Plan) {
        for node in plan.workers {
            _ = coordinator.onStepDone(node: node, step: step, generation: plan.generation, report: .init(lossSum: 1, samples: 128, stateChecksum: 7), now: .zero)
        }
    }

    @Test func aResumedJobRestoresEverySlotFromTheCheckpoint() {
        var job = PlanTests.job(stages: 2, replicas: 1)
        job.steps = 30
        var coordinator = TrainingCoordinator(job: job, samples: 1024)
        coordinator.resume(from: 12, path: "/c/step-00000012")
        guard case .assign(let plan, 12, [])? = coordinator.onMembership(members: ["a", "b"], generation: 1).first else {
            Issue.record("expected a plan from step 12")
            return
        }
        #expect(coordinator.restoreSource == "/c/step-00000012")
        _ = coordinator.onReady(node: "a", generation: 1)
        #expect(coordinator.onReady(node: "b", generation: 1) == [.startStep(12, generation: 1)])
        // Once the slots hold the state, nobody restores any more: a worker that joins before
        // the first commit copies from them.
        #expect(coordinator.restoreSource == nil)
        #expect(coordinator.onMembership(members: ["a", "b", "c"], generation: 2).isEmpty, "a spare joins: the plan stands")
        var wider = job
        wider.plan = JobSpec.PlanRequest(stages: 2, replicas: 2)
        var resumed = TrainingCoordinator(job: wider, samples: 1024)
        resumed.resume(from: 12, path: "/c/step-00000012")
        guard case .assign(let first, 12, [])? = resumed.onMembership(members: ["a", "b"], generation: 1).first else {
            Issue.record("expected a plan from step 12")
            return
        }
        _ = resumed.onReady(node: "a", generation: 1)
        _ = resumed.onReady(node: "b", generation: 1)
        guard case .assign(let second, 12, let newCopies)? = resumed.onMembership(members: ["a", "b", "c", "d"], generation: 2).first else {
            Issue.record("expected a re-plan from step 12")
            return
        }
        #expect(second.stages == first.stages && newCopies.count == 2 && resumed.restoreSource == nil, "new slots copy from the restored holders: \(newCopies)")
        commit(&coordinator, step: 12, plan: plan)
        #expect(coordinator.nextStep == 13)

        // A checkpoint written at the end: nothing is left to run.
        var done = TrainingCoordinator(job: job, samples: 1024)
        done.resume(from: 30, path: "/c/step-00000030")
        #expect(done.onMembership(members: ["a", "b"], generation: 1) == [.finished(steps: 30)] && done.phase == .finished)
    }

    @Test func losingEveryHolderOfAStageGoesBackToTheNewestCheckpoint() {
        var job = PlanTests.job(stages: 2, replicas: 1)
        job.steps = 30
        var coordinator = TrainingCoordinator(job: job, samples: 4096)
        guard case .assign(let plan, 0, [])? = coordinator.onMembership(members: ["a", "b", "c"], generation: 1).first else {
            Issue.record("expected a plan")
            return
        }
        _ = coordinator.onReady(node: "a", generation: 1)
        _ = coordinator.onReady(node: "b", generation: 1)
        for step in 0..<8 { commit(&coordinator, step: step, plan: plan) }
        coordinator.onCheckpoint(step: 5, path: "/c/step-00000005")
        // b (the only holder of stage 1) dies: back to step 5, everyone restores.
        let directives = coordinator.onMembership(members: ["a", "c"], generation: 2)
        #expect(directives.first == .rolledBack(toStep: 5, fromStep: 8, checkpoint: "/c/step-00000005"))
        guard case .assign(let fresh, 5, [])? = directives.last else {
            Issue.record("expected a plan from step 5, got \(directives)")
            return
        }
        #expect(Set(fresh.workers) == ["a", "c"] && coordinator.restoreSource == "/c/step-00000005")
        #expect(coordinator.ledger.map(\.step) == Array(0..<5) && coordinator.rolledBackSteps == 3)
        _ = coordinator.onReady(node: "a", generation: 2)
        #expect(coordinator.onReady(node: "c", generation: 2) == [.startStep(5, generation: 2)])
    }
}
