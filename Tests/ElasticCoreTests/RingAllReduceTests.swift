import ElasticCore
import Testing

/// In-memory ring: rank r delivers into the mailbox of rank r+1.
private struct MemoryLink: RingLink {
    let next: Mailbox<RingChunk.Key, [Float]>
    let mine: Mailbox<RingChunk.Key, [Float]>

    func send(_ chunk: RingChunk) async throws { await next.deliver(chunk.values, for: chunk.key) }
    func receive(_ key: RingChunk.Key) async throws -> [Float] { try await mine.take(key) }
}

private func allReduce(_ buffers: [[Float]], chunkElements: Int) async throws -> [[Float]] {
    let mailboxes = buffers.map { _ in Mailbox<RingChunk.Key, [Float]>() }
    return try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
        for (rank, buffer) in buffers.enumerated() {
            let link = MemoryLink(next: mailboxes[(rank + 1) % buffers.count], mine: mailboxes[rank])
            group.addTask {
                var mine = buffer
                try await RingAllReduce.run(&mine, rank: rank, size: buffers.count, link: link, chunkElements: chunkElements)
                return (rank, mine)
            }
        }
        var results = Array(repeating: [Float](), count: buffers.count)
        for try await (rank, result) in group { results[rank] = result }
        return results
    }
}

@Suite struct RingAllReduceTests {
    /// D = 1…5, sizes that do not divide evenly, empty buffers; small integers add exactly in
    /// any order, so the result must equal the plain sum bit for bit.
    @Test(arguments: 1...5)
    func equalsThePlainSum(ranks: Int) async throws {
        let seed = UInt64(0xA11_4ED0) + UInt64(ranks)
        print("seed: \(seed)")
        var rng = SplitMix64(seed: seed)
        for count in [0, 1, 2, 3, 4, 5, 7, 13, 64, 1000, 4099] {
            for chunk in [1, 3, 1 << 18] {
                let buffers = (0..<ranks).map { _ in (0..<count).map { _ in Float(Int(rng.next() % 2001) - 1000) } }
                let expected = (0..<count).map { i in buffers.reduce(Float(0)) { $0 + $1[i] } }
                let results = try await allReduce(buffers, chunkElements: chunk)
                for (rank, result) in results.enumerated() {
                    #expect(result == expected, "rank \(rank) of \(ranks), \(count) elements, chunk \(chunk)")
                }
            }
        }
    }

    /// Arbitrary floats: every rank ends with the same bits, within rounding of the plain sum.
    @Test func ranksAgreeBitForBitOnArbitraryFloats() async throws {
        var rng = SplitMix64(seed: 77)
        print("seed: 77")
        let buffers = (0..<4).map { _ in (0..<10_001).map { _ in Float(rng.normal()) } }
        let results = try await allReduce(buffers, chunkElements: 1000)
        for result in results.dropFirst() { #expect(result == results[0]) }
        for i in stride(from: 0, to: 10_001, by: 97) {
            let plain = buffers.reduce(Float(0)) { $0 + $1[i] }
            #expect(abs(results[0][i] - plain) <= 1e-5 * max(1, abs(plain)))
        }
    }
}

@Suite struct PlanTests {
    static func job(layers: Int = 5, stages: Int? = nil, replicas: Int? = nil, batch: Int = 256) -> JobSpec {
        let plan = stages.map { JobSpec.PlanRequest(stages: $0, replicas: replicas ?? 1) }
        return JobSpec(
            name: "t", model: .init(inputs: 256, layers: (0..<layers).map { $0 == layers - 1 ? .init(outputs: 10, activation: "none") : .init(outputs: 512, activation: "relu") }),
            data: .init(path: "d"), batch: batch, microBatches: 2, optimizer: .init(kind: "sgd", learningRate: 0.05, momentum: 0.9),
            steps: 10, seed: 42, plan: plan)
    }

    @Test func evenSplitCoversEverythingOnce() {
        for parts in 1...7 {
            for count in 0...40 {
                let ranges = EvenSplit.ranges(parts: parts, count: count)
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == count)
                #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                #expect((ranges.map(\.count).max() ?? 0) - (ranges.map(\.count).min() ?? 0) <= 1)
            }
        }
    }

    @Test func partitionIsOptimalOnSmallCases() {
        var rng = SplitMix64(seed: 5)
        print("seed: 5")
        for _ in 0..<300 {
            let n = Int(rng.next() % 7) + 1
            let parts = Int(rng.next() % UInt64(n)) + 1
            let costs = (0..<n).map { _ in Double(rng.next() % 50 + 1) }
            let ranges = Planner.partition(costs: costs, into: parts)
            #expect(ranges.count == parts && ranges.allSatisfy { !$0.isEmpty })
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == n)
            let worst = ranges.map { costs[$0].reduce(0, +) }.max()!
            #expect(worst == bruteForce(costs, parts), "\(costs) into \(parts)")
        }
    }

    private func bruteForce(_ costs: [Double], _ parts: Int) -> Double {
        if parts == 1 { return costs.reduce(0, +) }
        var best = Double.infinity
        for cut in 1..<costs.count where costs.count - cut >= parts - 1 {
            best = min(best, max(costs[..<cut].reduce(0, +), bruteForce(Array(costs[cut...]), parts - 1)))
        }
        return best
    }

    @Test func fixedPlansFillSlotsAndLeaveSpares() throws {
        let members: [NodeID] = ["e", "d", "c", "b", "a"]
        let plan = try Planner.plan(job: Self.job(stages: 2, replicas: 2), members: members, generation: 7).get()
        #expect(plan.stages.count == 2 && plan.replicas == 2)
        #expect(plan.nodes == [["a", "c"], ["b", "d"]])
        #expect(plan.spares == ["e"])
        #expect(plan.slot(of: "d") == Plan.Slot(stage: 1, replica: 1))
        #expect(Planner.plan(job: Self.job(stages: 4, replicas: 1), members: Array(members.prefix(3)), generation: 1) == .failure(Planner.PlanShortage(needed: 4, have: 3)))
        let automatic = try Planner.plan(job: Self.job(), members: members, generation: 1).get()
        #expect(automatic.stages == [0..<5] && automatic.replicas == 5)
    }
}

@Suite struct JobSpecTests {
    @Test func validJobHasNoProblem() {
        #expect(PlanTests.job().problem() == nil)
    }

    @Test func problemsNameTheField() {
        var job = PlanTests.job()
        job.batch = 0
        #expect(job.problem()?.hasPrefix("batch:") == true)
        job = PlanTests.job()
        job.model.layers[1].activation = "tanh"
        #expect(job.problem()?.hasPrefix("model.layers[1].activation:") == true)
        job = PlanTests.job()
        job.optimizer.kind = "lion"
        #expect(job.problem()?.hasPrefix("optimizer.kind:") == true)
        job = PlanTests.job()
        job.steps = nil
        #expect(job.problem()?.hasPrefix("steps:") == true)
        job = PlanTests.job(stages: 6)
        #expect(job.problem()?.hasPrefix("plan.stages:") == true)
    }
}

@Suite struct TrainingCoordinatorTests {
    @Test func stepsCommitOnlyWhenEverySlotReported() {
        var coordinator = TrainingCoordinator(job: PlanTests.job(stages: 2, replicas: 2), samples: 1024)
        let members: [NodeID] = ["a", "b", "c", "d"]
        let assign = coordinator.onMembership(members: members, generation: 4)
        guard case .assign(let plan, 0, [])? = assign.first else {
            Issue.record("expected an assignment, got \(assign)")
            return
        }
        for node in members.dropLast() { #expect(coordinator.onReady(node: node, generation: 4).isEmpty) }
        #expect(coordinator.onReady(node: "d", generation: 4) == [.startStep(0, generation: 4)])
        // Reports from a stale generation or step are ignored.
        #expect(coordinator.onStepDone(node: "a", step: 0, generation: 3, report: .init(lossSum: 1, samples: 1, stateChecksum: 1), now: .zero).isEmpty)
        #expect(coordinator.onStepDone(node: "a", step: 1, generation: 4, report: .init(lossSum: 1, samples: 1, stateChecksum: 1), now: .zero).isEmpty)
        let lastStage = Set(plan.nodes[1])
        var directives: [TrainingCoordinator.Directive] = []
        for node in members {
            directives = coordinator.onStepDone(node: node, step: 0, generation: 4, report: .init(lossSum: lastStage.contains(node) ? 128 : 0, samples: 128, stateChecksum: plan.slot(of: node)!.stage == 0 ? 11 : 22), now: .zero)
            if node != "d" { #expect(directives.isEmpty) }
        }
        guard case .record(let entry)? = directives.first else {
            Issue.record("expected a ledger entry, got \(directives)")
            return
        }
        #expect(entry.step == 0 && entry.loss == 1.0 && entry.replicasAgree && entry.nextSample == 256)
        #expect(directives.dropFirst() == [.commit(0, generation: 4), .startStep(1, generation: 4)])
        #expect(coordinator.nextStep == 1)
        // A report for step 1 is in flight when d dies: the step is abandoned and re-planned
        // onto the survivors, who keep their stages; nothing needs copying.
        _ = coordinator.onStepDone(node: "a", step: 1, generation: 4, report: .init(lossSum: 0, samples: 128, stateChecksum: 11), now: .zero)
        let replan = coordinator.onMembership(members: ["a", "b", "c"], generation: 5)
        guard case .assign(let smaller, 1, let copies)? = replan.first else {
            Issue.record("expected a re-plan from step 1, got \(replan)")
            return
        }
        #expect(smaller.nodes == [["a"], ["b"]] && smaller.spares == ["c"] && copies.isEmpty)
        #expect(coordinator.currentStep == nil && coordinator.replans == 1)
        // The smaller plan runs: from now on only a and b hold state (c, a spare, is behind).
        #expect(coordinator.onReady(node: "a", generation: 5).isEmpty)
        #expect(coordinator.onReady(node: "b", generation: 5) == [.startStep(1, generation: 5)])
        #expect(coordinator.holders == Holders(stages: smaller.stages, nodes: [["a"], ["b"]]))
        // New slots copy their stage's state from its holder: c (no longer current) and e.
        let grow = coordinator.onMembership(members: ["a", "b", "c", "e"], generation: 6)
        guard case .assign(let bigger, 1, let growCopies)? = grow.first else {
            Issue.record("expected a re-plan, got \(grow)")
            return
        }
        #expect(bigger.nodes == [["a", "c"], ["b", "e"]])
        #expect(Set(growCopies) == [StateTransfer(stage: 0, from: "a", to: "c"), StateTransfer(stage: 1, from: "b", to: "e")])
        // A spare leaving changes nothing.
        #expect(coordinator.onMembership(members: ["a", "b", "c", "e", "f"], generation: 7).isEmpty)
        #expect(coordinator.onMembership(members: ["a", "b", "c", "e"], generation: 8).isEmpty)
        // Every holder of stage 1 gone: its state is lost, training waits.
        #expect(coordinator.onMembership(members: ["a", "c"], generation: 9).isEmpty)
        guard case .waiting(let why) = coordinator.phase else {
            Issue.record("expected to wait, got \(coordinator.phase)")
            return
        }
        #expect(why.contains("layers 2-4") && why.contains("checkpoint"))
    }

    @Test func replanningKeepsSurvivorsOnTheirStages() throws {
        let job = PlanTests.job(stages: 2, replicas: 3)
        let first = try Planner.plan(job: job, members: ["a", "b", "c", "d", "e", "f"], generation: 1).get()
        #expect(first.nodes == [["a", "c", "e"], ["b", "d", "f"]])
        var rng = SplitMix64(seed: 11)
        print("seed: 11")
        for _ in 0..<500 {
            let survivors = first.workers.filter { _ in rng.next() % 3 != 0 } + (rng.next() % 2 == 0 ? ["g"] : [])
            guard case .success(let next) = Planner.plan(job: job, members: survivors, generation: 2, previous: Holders(first)) else {
                #expect(survivors.count < 2)
                continue
            }
            #expect(next.stages == first.stages)
            // Every survivor placed in a slot is on the stage it held, while that stage has room.
            for (stage, row) in next.nodes.enumerated() {
                for node in row where first.workers.contains(node) {
                    let held = first.slot(of: node)!.stage
                    #expect(held == stage || next.nodes[held].count == next.replicas, "\(node) moved from stage \(held) to \(stage)")
                }
            }
            #expect(Set(next.workers + next.spares) == Set(survivors))
            if let copies = Planner.transfers(from: Holders(first), to: next) {
                for copy in copies {
                    #expect(first.nodes[copy.stage].contains(copy.from) && next.nodes[copy.stage].contains(copy.to))
                }
            } else {
                #expect(next.nodes.indices.contains { stage in !first.nodes[stage].contains { survivors.contains($0) } })
            }
        }
    }

    /// A member that leaves gracefully while it is the only holder of its stage hands the
    /// state off: the next plan copies from it (it holds no slot), and it is a transfer source
    /// until that plan is ready. Without the hand-off the stage would be lost.
    @Test func aLeavingSoleHolderHandsOff() {
        var coordinator = TrainingCoordinator(job: PlanTests.job(stages: 2, replicas: 1), samples: 1024)
        guard case .assign(let plan, 0, [])? = coordinator.onMembership(members: ["a", "b", "c"], generation: 1).first else {
            Issue.record("expected a plan")
            return
        }
        #expect(plan.nodes == [["a"], ["b"]] && plan.spares == ["c"])
        _ = coordinator.onReady(node: "a", generation: 1)
        _ = coordinator.onReady(node: "b", generation: 1)
        for node: NodeID in ["a", "b"] {
            _ = coordinator.onStepDone(node: node, step: 0, generation: 1, report: .init(lossSum: 0, samples: 256, stateChecksum: 1), now: .zero)
        }
        #expect(coordinator.nextStep == 1 && coordinator.transferSources.isEmpty)
        // b leaves gracefully: c takes stage 1 and copies it from b.
        let replan = coordinator.onMembership(members: ["a", "c"], generation: 2, departing: ["b"])
        guard case .assign(let next, 1, let copies)? = replan.first else {
            Issue.record("expected a re-plan with a hand-off, got \(replan) in phase \(coordinator.phase)")
            return
        }
        #expect(next.nodes == [["a"], ["c"]] && copies == [StateTransfer(stage: 1, from: "b", to: "c")])
        #expect(coordinator.transferSources == ["b"])
        _ = coordinator.onReady(node: "a", generation: 2)
        #expect(coordinator.onReady(node: "c", generation: 2) == [.startStep(1, generation: 2)])
        #expect(coordinator.transferSources.isEmpty && coordinator.holders?.nodes == [["a"], ["c"]])

        // The same leave without a hand-off (b already gone) loses the stage.
        var lost = TrainingCoordinator(job: PlanTests.job(stages: 2, replicas: 1), samples: 1024)
        _ = lost.onMembership(members: ["a", "b", "c"], generation: 1)
        _ = lost.onReady(node: "a", generation: 1)
        _ = lost.onReady(node: "b", generation: 1)
        for node: NodeID in ["a", "b"] {
            _ = lost.onStepDone(node: node, step: 0, generation: 1, report: .init(lossSum: 0, samples: 256, stateChecksum: 1), now: .zero)
        }
        #expect(lost.onMembership(members: ["a", "c"], generation: 2).isEmpty && lost.phase.name == "waiting")
    }

    /// A holder that is now a spare (fewer replicas) still serves copies when no slot of the
    /// stage holds it, and a holder that keeps its slot is always preferred.
    @Test func transfersPreferHoldersThatStay() {
        let stages = [0..<1, 1..<2]
        let holders = Holders(stages: stages, nodes: [["a", "x"], ["b"]])
        let staying = Plan(generation: 2, stages: stages, replicas: 2, nodes: [["a", "c"], ["b", "d"]], spares: ["x"])
        #expect(Planner.transfers(from: holders, to: staying) == [StateTransfer(stage: 0, from: "a", to: "c"), StateTransfer(stage: 1, from: "b", to: "d")])
        let moved = Plan(generation: 2, stages: stages, replicas: 1, nodes: [["c"], ["b"]], spares: ["a", "x"])
        #expect(Planner.transfers(from: holders, to: moved) == [StateTransfer(stage: 0, from: "a", to: "c")])
        let gone = Holders(stages: stages, nodes: [[], ["b"]])
        #expect(Planner.transfers(from: gone, to: moved) == nil)
    }

    @Test func waitsForEnoughMembers() {
        var coordinator = TrainingCoordinator(job: PlanTests.job(stages: 2, replicas: 2), samples: 1024)
        #expect(coordinator.onMembership(members: ["a"], generation: 1).isEmpty)
        // Two stages need two workers; replicas come as members do (the job's 2 is the most).
        #expect(coordinator.phase == .waiting("the plan needs 2 worker(s), 1 member(s) are alive"))
        let assigned = coordinator.onMembership(members: ["a", "b", "c", "d", "e"], generation: 4)
        guard case .assign(let plan, 0, [])? = assigned.first else {
            Issue.record("expected a plan, got \(assigned)")
            return
        }
        #expect(plan.replicas == 2 && plan.spares == ["e"] && coordinator.phase == .assigning)
    }
}

@Suite struct DataOrderTests {
    @Test func permutationIsAPermutationAndDeterministic() {
        let a = DataOrder.permutation(seed: 42, epoch: 0, count: 1000)
        #expect(Set(a).count == 1000 && a.allSatisfy { $0 >= 0 && $0 < 1000 })
        #expect(a == DataOrder.permutation(seed: 42, epoch: 0, count: 1000))
        #expect(a != DataOrder.permutation(seed: 42, epoch: 1, count: 1000))
        #expect(DataOrder.permutation(seed: 1, epoch: 0, count: 0).isEmpty)
        #expect(DataOrder.stepRange(step: 3, batch: 256) == 768..<1024)
    }
}
