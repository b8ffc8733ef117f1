import Foundation
import ElasticCore
import ElasticTestSupport
import Testing

/// The controller's durable state (the journal's reducer) and what the core rebuilds from it
/// after a restart: the membership that waits for its members to resume, and the coordinator
/// that continues the job with its holders.
@Suite struct DurableStateTests {
    static func member(_ node: String, _ incarnation: UInt64) -> DurableState.Member {
        DurableState.Member(node: node, incarnation: incarnation, address: "10.0.0.1:\(incarnation)", cores: 2, memoryBytes: 1 << 30, gflops: 10, certificateSerial: "s\(incarnation)", dataAddress: "")
    }

    static func step(_ step: Int, generation: UInt64 = 4) -> DurableState.Step {
        DurableState.Step(step: step, epoch: step / 16, nextSample: (step % 16 + 1) * 256, loss: 2, generation: generation, replicasAgree: true)
    }

    @Test func theReducerFollowsMembersGenerationsAndTheLedger() {
        var state = DurableState()
        state.apply(.joined(Self.member("w1", 1)))
        state.apply(.joined(Self.member("w2", 2)))
        state.apply(.generation(3))
        #expect(state.generation == 3 && state.members.keys.sorted() == ["w1", "w2"])
        state.apply(.departed(DurableState.Departure(node: "w1", incarnation: 1, state: "dead", atGeneration: 4, reason: "gone")))
        #expect(state.generation == 4 && state.members.keys.sorted() == ["w2"] && state.departures["w1"]?.incarnation == 1)
        // A departure of an older incarnation does not remove a newer one.
        state.apply(.joined(Self.member("w1", 5)))
        state.apply(.departed(DurableState.Departure(node: "w1", incarnation: 1, state: "dead", atGeneration: 5, reason: "late")))
        #expect(state.members["w1"]?.incarnation == 5)

        state.apply(.job(DurableState.Job(json: "{}", samples: 4096)))
        for step in 0..<10 { state.apply(.committed(Self.step(step))) }
        state.apply(.checkpoint(DurableState.Checkpoint(step: 5, path: "/c/5", rawBytes: 1, storedBytes: 1)))
        #expect(state.nextStep == 10)
        state.apply(.rolledBack(toStep: 5, fromStep: 10))
        #expect(state.nextStep == 5 && state.rolledBackSteps == 5 && state.holders == nil)
        state.apply(.committed(Self.step(5)))
        #expect(state.ledger.map(\.step) == [0, 1, 2, 3, 4, 5])
        // A new job starts from nothing.
        state.apply(.job(DurableState.Job(json: "{\"b\":1}", samples: 4096, resumeStep: 20, resumePath: "/c/20")))
        #expect(state.ledger.isEmpty && state.checkpoints.isEmpty && state.nextStep == 20)
    }

    /// After a restart every recorded member is suspect (not dead) until it resumes; the
    /// generation moves past everything recorded; departures still fence.
    @Test func aRecoveredMembershipWaitsForItsMembers() {
        var state = DurableState()
        state.apply(.joined(Self.member("w1", 1)))
        state.apply(.joined(Self.member("w2", 2)))
        state.apply(.joined(Self.member("w3", 3)))
        state.apply(.departed(DurableState.Departure(node: "w3", incarnation: 3, state: "dead", atGeneration: 4, reason: "no heartbeat")))
        state.apply(.generation(6))
        var settings = Membership.Settings()
        settings.recoveryGrace = .seconds(10)
        var clock = FakeClock()
        var membership = Membership(settings: settings, recovering: state, now: clock.now)
        #expect(membership.generation == 7)
        #expect(membership.awaitingRecovery == ["w1", "w2"])
        #expect(membership.members.values.allSatisfy { $0.state == .suspect })

        // Past the dead timeout (2 s) but within the grace: nobody dies.
        clock.advance(.seconds(5))
        #expect(membership.onTick(now: clock.now).deaths.isEmpty)

        // w1 resumes its incarnation: welcomed at the current generation, no new generation.
        let resumed = membership.onJoin(node: "w1", address: "a", capacity: sampleCapacity, resuming: 1, now: clock.now)
        #expect(resumed.welcomes.map(\.incarnation) == [1])
        #expect(membership.generation == 7 && membership.awaitingRecovery == ["w2"])
        // The fenced incarnation of w3 stays fenced, with its reason.
        let fenced = membership.onJoin(node: "w3", address: "a", capacity: sampleCapacity, resuming: 3, now: clock.now)
        #expect(fenced.welcomes.isEmpty && fenced.events.contains { if case .refused(_, .fenced(_, _, let departure?), _) = $0 { departure.reason == "no heartbeat" } else { false } })

        // w2 never comes back: dead after the grace, one generation (w1 heartbeats meanwhile,
        // the controller ticks every 100 ms).
        var deaths: [(node: NodeID, reason: Membership.DeathReason)] = []
        for tick in 1...60 {
            clock.advance(.milliseconds(100))
            if tick % 5 == 0 { _ = membership.onHeartbeat(node: "w1", incarnation: 1, generation: 7, now: clock.now) }
            deaths += membership.onTick(now: clock.now).deaths.map { ($0.node, $0.reason) }
        }
        #expect(deaths.map(\.node) == ["w2"])
        #expect(deaths.map(\.reason) == [.notRecovered])
        #expect(membership.generation == 8 && membership.awaitingRecovery.isEmpty)
        // w1, which resumed, follows the ordinary detector again.
        #expect(membership.members["w1"]?.state == .alive)
    }

    /// The coordinator continued from the durable state plans with the recorded holders: the
    /// same nodes keep the same stages (no transfers) and training resumes at the next step.
    @Test func aRecoveredCoordinatorKeepsItsHolders() throws {
        let job = PlanTests.job(stages: 2, replicas: 2)
        var first = TrainingCoordinator(job: job, samples: 1024)
        let members: [NodeID] = ["a", "b", "c", "d"]
        var directives = first.onMembership(members: members, generation: 4)
        let plan = try #require(first.plan)
        for node in members { directives = first.onReady(node: node, generation: 4) }
        #expect(first.phase == .running)
        _ = directives
        let holders = try #require(first.holders)
        var state = DurableState()
        state.apply(.job(DurableState.Job(json: "{}", samples: 4096)))
        state.apply(.holders(DurableState.HolderSet(holders)))
        for step in 0..<7 { state.apply(.committed(Self.step(step))) }

        var recovered = TrainingCoordinator(job: job, samples: 1024)
        recovered.recover(ledger: state.ledger.map { $0.entry(committedAt: .zero) }, resumeStep: state.resumeStep,
                          rolledBackSteps: 0, holders: state.holders?.holders, checkpoint: nil)
        #expect(recovered.nextStep == 7)
        let assigned = recovered.onMembership(members: members, generation: 9)
        guard case let .assign(next, nextStep, transfers)? = assigned.first else {
            Issue.record("no assignment: \(assigned)")
            return
        }
        #expect(nextStep == 7 && transfers.isEmpty)
        #expect(next.nodes == plan.nodes)
        #expect(recovered.restoreSource == nil)
    }

    /// Revocations replay from the journal, keep the first record of a serial, and a snapshot
    /// from before they existed still decodes.
    @Test func revocationsReplayAndOldSnapshotsStillDecode() throws {
        var state = DurableState()
        state.apply(.joined(Self.member("w1", 1)))
        state.apply(.revoked(DurableState.Revocation(serial: "42", node: "w1", at: 100, reason: "revoked by an administrator")))
        state.apply(.revoked(DurableState.Revocation(serial: "42", node: "w1", at: 200, reason: "again")))
        #expect(state.revoked["42"]?.at == 100 && state.revoked.count == 1)
        let encoded = try JSONEncoder().encode(state)
        #expect(try JSONDecoder().decode(DurableState.self, from: encoded) == state)
        var old = try JSONSerialization.jsonObject(with: encoded) as! [String: Any]
        old["revokedSerials"] = nil
        let decoded = try JSONDecoder().decode(DurableState.self, from: JSONSerialization.data(withJSONObject: old))
        #expect(decoded.revoked.isEmpty && decoded.members["w1"] != nil)
        // A departure keeps the certificate it was a member with.
        state.apply(.departed(DurableState.Departure(node: "w1", incarnation: 1, state: "dead", atGeneration: 2, reason: "x", certificateSerial: "7")))
        #expect(state.departures["w1"]?.certificateSerial == "7")
    }
}
