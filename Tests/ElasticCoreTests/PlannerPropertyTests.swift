import ElasticCore
import ElasticTestSupport
import Foundation
import Testing

/// Planner properties (issue 4, test 1): every layer in exactly one stage per replica, memory
/// respected, deterministic, re-planning the same members gives the same plan, large clusters.
@Suite struct PlannerPropertyTests {
    @Test func randomizedPlansKeepTheirProperties() throws {
        let seed = TestSeed.make("planner properties")
        var rng = SplitMix64(seed: seed)
        for round in 0..<400 {
            let layers = 2 + Int(rng.next() % 6)
            var job = PlanTests.job(layers: layers)
            let stages = 1 + Int(rng.next() % UInt64(layers))
            job.plan = rng.next() % 4 == 0 ? nil : JobSpec.PlanRequest(stages: stages, replicas: 1 + Int(rng.next() % 4))
            let count = Int(rng.next() % 12)
            let members = (0..<count).map { NodeID("n\($0)") }
            // Some members are too small for the larger stages.
            let memory = Dictionary(uniqueKeysWithValues: members.map { ($0, rng.next() % 3 == 0 ? UInt64(4_000_000 + rng.next() % 4_000_000) : UInt64(1) << 34) })
            let result = Planner.plan(job: job, members: members, generation: 1, memory: memory)
            guard case .success(let plan) = result else { continue }
            // Every layer is in exactly one stage; stages are contiguous and cover the model.
            #expect(plan.stages.first?.lowerBound == 0 && plan.stages.last?.upperBound == layers, "round \(round)")
            #expect(zip(plan.stages, plan.stages.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound && !$0.isEmpty })
            // Every replica has one node per stage, every node at most one slot, memory respected.
            #expect(plan.nodes.allSatisfy { $0.count == plan.replicas })
            #expect(Set(plan.workers + plan.spares).count == members.count)
            for (stage, row) in plan.nodes.enumerated() {
                for node in row { #expect(memory[node]! >= Planner.stateBytes(job: job, layers: plan.stages[stage]), "round \(round): \(node) too small for stage \(stage)") }
            }
            // Deterministic, whatever the order of the members.
            #expect(Planner.plan(job: job, members: members.shuffled(using: &rng), generation: 1, memory: memory) == result)
            // Re-planning the same members from this plan keeps it.
            let again = try Planner.plan(job: job, members: members, generation: 1, previous: Holders(plan), memory: memory).get()
            #expect(again.nodes == plan.nodes && Planner.transfers(from: Holders(plan), to: again) == [])
        }
    }

    @Test func tenThousandMembers() throws {
        let members = (0..<10_000).map { NodeID(String(format: "node-%05d", $0)) }
        var job = PlanTests.job()
        job.plan = JobSpec.PlanRequest(stages: 2, replicas: 256)
        let clock = ContinuousClock()
        let start = clock.now
        let plan = try Planner.plan(job: job, members: members, generation: 1).get()
        let replan = try Planner.plan(job: job, members: Array(members.dropFirst(7)), generation: 2, previous: Holders(plan)).get()
        print("planned 10 000 members twice in \(clock.now - start)")
        #expect(plan.replicas == 256 && plan.spares.count == 10_000 - 512)
        #expect(replan.replicas == 256 && Set(replan.workers).isSubset(of: Set(members.dropFirst(7))))
        #expect(try #require(Planner.transfers(from: Holders(plan), to: replan)).count <= 7)
    }
}
