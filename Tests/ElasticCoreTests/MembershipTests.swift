import ElasticCore
import Testing

/// The failure detector, one rule at a time, on a fake clock.
@Suite("Membership")
struct MembershipTests {
    /// The defaults, spelled out so that the arithmetic below reads on its own.
    static let settings: Membership.Settings = {
        var settings = Membership.Settings()
        settings.heartbeatInterval = .milliseconds(500)
        settings.suspectAfter = .seconds(1)
        settings.deadTimeout = .seconds(2)
        settings.reconnectGrace = .seconds(1)
        settings.maxTickInterval = .milliseconds(100)
        return settings
    }()

    let w1: NodeID = "w1"
    let w2: NodeID = "w2"
    let w3: NodeID = "w3"

    // MARK: Join

    @Test func joinWelcomesBroadcastsAndBumpsTheGeneration() throws {
        var membership = Membership(settings: Self.settings)
        let clock = FakeClock()
        #expect(membership.generation == .zero)

        let directives = membership.onJoin(node: w1, address: "10.0.0.1:7070", capacity: sampleCapacity, resuming: nil, now: clock.now)
        #expect(membership.generation == 1)
        #expect(sameDirectives(directives, [
            .record(.joined(node: w1, incarnation: 1, address: "10.0.0.1:7070", generation: 1)),
            .welcome(node: w1, incarnation: 1, generation: 1),
            .broadcastView(generation: 1),
        ]))
        let member = try #require(membership.members[w1])
        #expect(member.node == w1)
        #expect(member.incarnation == 1)
        #expect(member.address == "10.0.0.1:7070")
        #expect(member.capacity == sampleCapacity)
        #expect(member.state == .alive)
        #expect(member.lastHeard == clock.now)
        #expect(member.joinedAt == clock.now)
        #expect(member.suspicion == nil)

        let second = membership.onJoin(node: w2, address: "10.0.0.2:7070", capacity: sampleCapacity, resuming: nil, now: clock.now)
        #expect(membership.generation == 2)
        #expect(second.welcomes.map(\.incarnation) == [2])
        #expect(second.welcomes.map(\.generation) == [2])
        #expect(second.broadcasts == [2])
        #expect(second.closedSessions.isEmpty)
        #expect(membership.liveMembers.map(\.node) == [w1, w2])
        #expect(membership.liveMembers.map(\.incarnation) == [1, 2])
    }

    @Test func incarnationIsTheNewGenerationWhenStartingAboveZero() {
        var membership = Membership(settings: Self.settings, generation: 41)
        let directives = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: FakeClock().now)
        #expect(membership.generation == 42)
        #expect(membership.members[w1]?.incarnation == 42)
        #expect(directives.welcomes.first?.incarnation == 42)
        #expect(directives.welcomes.first?.generation == 42)
    }

    // MARK: Heartbeats and silence

    @Test func heartbeatsKeepAMemberAliveIndefinitely() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        for _ in 0..<200 {  // 100 s of heartbeats every 500 ms, ticking every 100 ms
            for _ in 0..<5 {
                clock.advance(.milliseconds(100))
                let tick = membership.onTick(now: clock.now)
                #expect(tick.events.isEmpty)
                #expect(tick.broadcasts.isEmpty)
            }
            let ack = membership.onHeartbeat(node: w1, incarnation: 1, generation: 1, now: clock.now)
            #expect(ack == [.acknowledge(node: w1, generation: 1)])
        }
        #expect(membership.generation == 1)
        #expect(membership.members[w1]?.state == .alive)
        #expect(membership.members[w1]?.lastHeard == clock.now)
    }

    @Test func silenceMakesSuspectAfterSuspectAfterThenDeadAfterDeadTimeout() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        let joined = clock.now
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)

        // Exactly suspectAfter of silence is not yet "after".
        clock.now = joined + .seconds(1)
        #expect(membership.onTick(now: clock.now).events.isEmpty)
        #expect(membership.members[w1]?.state == .alive)

        clock.advance(.nanoseconds(1))
        let suspected = membership.onTick(now: clock.now)
        #expect(suspected.events == [.suspected(node: w1, incarnation: 1, reason: .silent, generation: 1)])
        #expect(suspected.broadcasts.isEmpty)
        #expect(membership.generation == 1)
        let suspect = try #require(membership.members[w1])
        #expect(suspect.state == .suspect)
        #expect(suspect.suspicion?.reason == .silent)
        #expect(suspect.suspicion?.since == clock.now)

        // Still suspect, not re-suspected, at exactly deadTimeout.
        clock.now = joined + .seconds(2)
        #expect(membership.onTick(now: clock.now).events.isEmpty)
        #expect(membership.members[w1]?.state == .suspect)

        clock.advance(.nanoseconds(1))
        let died = membership.onTick(now: clock.now)
        #expect(membership.generation == 2)
        #expect(membership.members.isEmpty)
        let departure = try requireDeparture(membership, w1, incarnation: 1, state: .dead, atGeneration: 2, reason: Membership.DeathReason.heartbeatTimeout.rawValue)
                #expect(died.events == [.died(
            node: w1, incarnation: 1, reason: .heartbeatTimeout,
            silentFor: .seconds(2) + .nanoseconds(1), generation: 2)])
        #expect(died.closedSessions.count == 1)
        #expect(died.contains(.closeSession(node: w1, incarnation: 1, .fenced(node: w1, incarnation: 1, departure: departure))))
        #expect(died.broadcasts == [2])
        #expect(died.scheduledTicks.count == 1)

        // Nothing more happens to the dead (10 s of ticks).
        for _ in 0..<100 {
            clock.advance(.milliseconds(100))
            #expect(membership.onTick(now: clock.now).events.isEmpty)
        }
        #expect(membership.generation == 2)
    }

    @Test func heartbeatRecoversASilentSuspect() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(1500))
        _ = membership.onTick(now: clock.now)
        #expect(membership.members[w1]?.state == .suspect)

        let directives = membership.onHeartbeat(node: w1, incarnation: 1, generation: 1, now: clock.now)
        #expect(sameDirectives(directives, [
            .record(.recovered(node: w1, incarnation: 1, generation: 1)),
            .acknowledge(node: w1, generation: 1),
        ]))
        #expect(membership.members[w1]?.state == .alive)
        #expect(membership.members[w1]?.suspicion == nil)
        #expect(membership.generation == 1)

        // The heartbeat restarted the silence: 1.9 s later it is alive and well.
        clock.advance(.milliseconds(900))
        #expect(membership.onTick(now: clock.now).events.isEmpty)
        #expect(membership.members[w1]?.state == .alive)
    }

    // MARK: Disconnect and resume

    @Test func disconnectSuspectsAtOnceAndResumeWithinGraceRecovers() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "10.0.0.1:7070", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "10.0.0.2:7070", capacity: sampleCapacity, resuming: nil, now: clock.now)

        clock.advance(.milliseconds(100))
        let dropped = clock.now
        let disconnect = membership.onDisconnect(node: w1, incarnation: 1, now: clock.now)
        #expect(disconnect == [.record(.suspected(node: w1, incarnation: 1, reason: .connectionLost, generation: 2))])
        #expect(membership.generation == 2)
        let suspect = try #require(membership.members[w1])
        #expect(suspect.state == .suspect)
        #expect(suspect.suspicion?.reason == .connectionLost)
        #expect(suspect.suspicion?.since == dropped)

        // A second report of the same drop changes nothing.
        #expect(membership.onDisconnect(node: w1, incarnation: 1, now: clock.now + .milliseconds(10)).isEmpty)
        #expect(membership.members[w1]?.suspicion?.since == dropped)

        // Exactly at the end of the grace it is still only suspect.
        clock.now = dropped + .seconds(1)
        _ = membership.onHeartbeat(node: w2, incarnation: 2, generation: 2, now: clock.now)
        let tick = membership.onTick(now: clock.now)
        #expect(tick.events.isEmpty)
        #expect(membership.members[w1]?.state == .suspect)

        let newCapacity = Capacity(cores: 8, memoryBytes: 1 << 30, gflops: 3)
        let resumed = membership.onJoin(node: w1, address: "10.0.0.9:7071", capacity: newCapacity, resuming: 1, now: clock.now)
        #expect(sameDirectives(resumed, [
            .record(.resumed(node: w1, incarnation: 1, generation: 2)),
            .record(.recovered(node: w1, incarnation: 1, generation: 2)),
            .welcome(node: w1, incarnation: 1, generation: 2),
        ]))
        #expect(membership.generation == 2)
        let member = try #require(membership.members[w1])
        #expect(member.state == .alive)
        #expect(member.suspicion == nil)
        #expect(member.incarnation == 1)
        #expect(member.address == "10.0.0.9:7071")
        #expect(member.capacity == newCapacity)
        #expect(member.lastHeard == clock.now)

        // Long after the original grace it is still alive, as long as it heartbeats.
        for _ in 0..<30 {
            clock.advance(.milliseconds(500))
            _ = membership.onHeartbeat(node: w1, incarnation: 1, generation: 2, now: clock.now)
            _ = membership.onHeartbeat(node: w2, incarnation: 2, generation: 2, now: clock.now)
            #expect(membership.onTick(now: clock.now).events.isEmpty)
        }
        #expect(membership.generation == 2)
    }

    @Test func resumeOfALiveMemberIsWelcomedWithoutRecovery() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(300))
        let directives = membership.onJoin(node: w1, address: "b", capacity: sampleCapacity, resuming: 1, now: clock.now)
        #expect(sameDirectives(directives, [
            .record(.resumed(node: w1, incarnation: 1, generation: 1)),
            .welcome(node: w1, incarnation: 1, generation: 1),
        ]))
        #expect(membership.generation == 1)
        #expect(membership.members[w1]?.lastHeard == clock.now)
        #expect(membership.members[w1]?.address == "b")
    }

    @Test func disconnectedPastTheGraceDiesAndCannotResume() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(100))
        let dropped = clock.now
        _ = membership.onDisconnect(node: w1, incarnation: 1, now: clock.now)

        clock.now = dropped + .seconds(1) + .nanoseconds(1)
        let died = membership.onTick(now: clock.now)
        #expect(membership.generation == 2)
        #expect(membership.members.isEmpty)
        #expect(died.deaths.count == 1)
        #expect(died.deaths.first?.reason == .disconnected)
        #expect(died.deaths.first?.silentFor == .milliseconds(1100) + .nanoseconds(1))  // since the join
        #expect(died.broadcasts == [2])
        let departure = try requireDeparture(membership, w1, incarnation: 1, state: .dead, atGeneration: 2, reason: Membership.DeathReason.disconnected.rawValue)
                #expect(died.contains(.closeSession(node: w1, incarnation: 1, .fenced(node: w1, incarnation: 1, departure: departure))))

        // Too late: resuming the dead incarnation is refused, naming what happened.
        let before = membership
        let refused = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: 1, now: clock.now)
        let refusal = Membership.Refusal.fenced(node: w1, incarnation: 1, departure: departure)
        #expect(sameDirectives(refused, [
            .record(.refused(node: w1, refusal, generation: 2)),
            .refuse(node: w1, refusal),
        ]))
        #expect(membership.generation == before.generation)
        #expect(membership.members == before.members)
        #expect(membership.departures == before.departures)
        let explanation = refusal.explanation
        #expect(explanation.contains("declared dead at generation 2"))
        #expect(explanation.contains(Membership.DeathReason.disconnected.rawValue))
        #expect(explanation.contains("join again"))
    }

    @Test func heartbeatFromAFencedIncarnationIsRefusedWithItsDeparture() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(1500))
        _ = membership.onHeartbeat(node: w2, incarnation: 2, generation: 2, now: clock.now)
        clock.advance(.milliseconds(600))
        _ = membership.onTick(now: clock.now)  // w1 silent 2.1 s: dead at generation 3
        #expect(membership.generation == 3)
        #expect(membership.members[w1] == nil)

        // A worker that was SIGSTOPped wakes up and heartbeats as if nothing happened.
        let before = membership
        let directives = membership.onHeartbeat(node: w1, incarnation: 1, generation: 2, now: clock.now)
        let departure = try requireDeparture(membership, w1, incarnation: 1, state: .dead, atGeneration: 3, reason: Membership.DeathReason.heartbeatTimeout.rawValue)
        let refusal = Membership.Refusal.fenced(node: w1, incarnation: 1, departure: departure)
        #expect(sameDirectives(directives, [
            .record(.refused(node: w1, refusal, generation: 3)),
            .refuse(node: w1, refusal),
        ]))
        #expect(directives.acknowledgements.isEmpty)
        #expect(membership.members == before.members)
        #expect(membership.generation == 3)
        #expect(refusal.explanation == "member w1 incarnation 1 was declared dead at generation 3 (no heartbeat within the dead timeout); join again as a new member")

        // Even if it claims the current generation.
        #expect(membership.onHeartbeat(node: w1, incarnation: 1, generation: 3, now: clock.now).refusals.map(\.refusal) == [refusal])
        // And its leave is refused too, without moving the generation.
        #expect(membership.onLeave(node: w1, incarnation: 1, generation: 3, now: clock.now).refusals.map(\.refusal) == [refusal])
        #expect(membership.generation == 3)
    }

    @Test func rejoinAfterDeathIsANewMemberWithANewIncarnation() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.seconds(3))
        _ = membership.onTick(now: clock.now)
        #expect(membership.generation == 2)

        let rejoin = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        #expect(membership.generation == 3)
        #expect(membership.members[w1]?.incarnation == 3)
        #expect(rejoin.welcomes.map(\.incarnation) == [3])
        #expect(rejoin.broadcasts == [3])
        #expect(rejoin.closedSessions.isEmpty)  // the old incarnation was already gone
        #expect(rejoin.deaths.isEmpty)

        // The new incarnation is accepted, the old one stays fenced.
        #expect(membership.onHeartbeat(node: w1, incarnation: 3, generation: 3, now: clock.now) == [.acknowledge(node: w1, generation: 3)])
        let old = membership.onHeartbeat(node: w1, incarnation: 1, generation: 3, now: clock.now)
        #expect(old.refusals.count == 1)
        if case let .fenced(_, incarnation, departure)? = old.refusals.first?.refusal {
            #expect(incarnation == 1)
            #expect(departure?.atGeneration == 2)
        } else {
            Issue.record("expected a fenced refusal, got \(old)")
        }
    }

    @Test func freshJoinOfALiveNodeReplacesItsOldIncarnation() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(700))

        let directives = membership.onJoin(node: w1, address: "c", capacity: sampleCapacity, resuming: nil, now: clock.now)
        #expect(membership.generation == 3)
        let departure = try requireDeparture(membership, w1, incarnation: 1, state: .dead, atGeneration: 3, reason: Membership.DeathReason.replaced.rawValue)
        #expect(sameDirectives(directives, [
            .record(.died(node: w1, incarnation: 1, reason: .replaced, silentFor: .milliseconds(700), generation: 3)),
            .closeSession(node: w1, incarnation: 1, .fenced(node: w1, incarnation: 1, departure: departure)),
            .record(.joined(node: w1, incarnation: 3, address: "c", generation: 3)),
            .welcome(node: w1, incarnation: 3, generation: 3),
            .broadcastView(generation: 3),
        ]))
        #expect(membership.members.count == 2)
        let member = try #require(membership.members[w1])
        #expect(member.incarnation == 3)
        #expect(member.address == "c")
        #expect(member.joinedAt == clock.now)
                #expect(membership.onHeartbeat(node: w1, incarnation: 1, generation: 3, now: clock.now).refusals.count == 1)
        #expect(membership.onHeartbeat(node: w1, incarnation: 3, generation: 3, now: clock.now).acknowledgements.count == 1)
    }

    @Test func resumeOfAnUnknownIncarnationIsRefusedAndChangesNothing() {
        var membership = Membership(settings: Self.settings)
        let clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        let before = membership

        for (node, incarnation) in [(w1, Generation(2)), (w1, 7), (w3, 1), (w2, 0)] {
            let directives = membership.onJoin(node: node, address: "x", capacity: sampleCapacity, resuming: incarnation, now: clock.now + .seconds(1))
            let refusal = Membership.Refusal.fenced(node: node, incarnation: incarnation, departure: nil)
            #expect(sameDirectives(directives, [
                .record(.refused(node: node, refusal, generation: 2)),
                .refuse(node: node, refusal),
            ]))
            #expect(refusal.explanation.contains("is not a member of this cluster"))
        }
        #expect(membership.generation == before.generation)
        #expect(membership.members == before.members)
        #expect(membership.departures == before.departures)
    }

    @Test func disconnectOfAnotherIncarnationOrNodeIsIgnored() {
        var membership = Membership(settings: Self.settings)
        let clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        let before = membership
        #expect(membership.onDisconnect(node: w1, incarnation: 5, now: clock.now).isEmpty)
        #expect(membership.onDisconnect(node: w2, incarnation: 1, now: clock.now).isEmpty)
        #expect(membership.members == before.members)
    }

    @Test func disconnectOfASilentSuspectRestartsTheGraceFromTheDrop() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        let joined = clock.now
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.now = joined + .milliseconds(1200)
        _ = membership.onTick(now: clock.now)
        #expect(membership.members[w1]?.suspicion?.reason == .silent)

        let directives = membership.onDisconnect(node: w1, incarnation: 1, now: clock.now)
        #expect(directives.events == [.suspected(node: w1, incarnation: 1, reason: .connectionLost, generation: 1)])
        let member = try #require(membership.members[w1])
        #expect(member.suspicion?.reason == .connectionLost)
        #expect(member.suspicion?.since == clock.now)

        // Dies at whichever comes first: here the dead timeout (joined + 2 s) beats the grace (2.2 s).
        clock.now = joined + .seconds(2) + .nanoseconds(1)
        let died = membership.onTick(now: clock.now)
        #expect(died.deaths.map(\.reason) == [.heartbeatTimeout])
    }

    // MARK: Admission

    @Test func admissionRefusesStaleFutureAndFencedAndAcceptsCurrent() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w3, address: "c", capacity: sampleCapacity, resuming: nil, now: clock.now)
        #expect(membership.generation == 3)

        #expect(membership.admission(node: w1, incarnation: 1, generation: 3) == nil)
        #expect(membership.admission(node: w3, incarnation: 3, generation: 3) == nil)

        let stale = membership.admission(node: w1, incarnation: 1, generation: 2)
        #expect(stale == .staleGeneration(message: 2, current: 3))
        #expect(stale?.explanation == "message from generation 2 refused: the cluster is at generation 3")
        #expect(membership.admission(node: w1, incarnation: 1, generation: 0) == .staleGeneration(message: 0, current: 3))

        let future = membership.admission(node: w1, incarnation: 1, generation: 4)
        #expect(future == .futureGeneration(message: 4, current: 3))
        #expect(future?.explanation == "message claims generation 4, but the cluster is only at generation 3")
        #expect(membership.admission(node: w1, incarnation: 1, generation: Generation(.max)) == .futureGeneration(message: Generation(.max), current: 3))

        #expect(membership.admission(node: w1, incarnation: 2, generation: 3) == .fenced(node: w1, incarnation: 2, departure: nil))
        #expect(membership.admission(node: "ghost", incarnation: 1, generation: 3) == .fenced(node: "ghost", incarnation: 1, departure: nil))

        // A dead incarnation is fenced with its departure, even with the current generation.
        _ = membership.onLeave(node: w2, incarnation: 2, generation: 3, now: clock.now)
        clock.advance(.seconds(5))
        _ = membership.onTick(now: clock.now)
        #expect(membership.generation == 5)
        let fenced = membership.admission(node: w1, incarnation: 1, generation: 5)
        guard case let .fenced(node, incarnation, departure?)? = fenced else {
            Issue.record("expected fenced with a departure, got \(String(describing: fenced))")
            return
        }
        #expect(node == w1)
        #expect(incarnation == 1)
        #expect(departure.state == .dead)
        #expect(departure.atGeneration == 5)
        let left = try requireDeparture(membership, w2, incarnation: 2, state: .left, atGeneration: 4, reason: "left the cluster")
        #expect(membership.admission(node: w2, incarnation: 2, generation: 5) == .fenced(node: w2, incarnation: 2, departure: left))
    }

    @Test func heartbeatBehindTheCurrentGenerationIsAcknowledgedWithTheCurrentOne() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w3, address: "c", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(400))

        // w1 has not seen the view of generations 2 and 3 yet: still alive, told where we are.
        #expect(membership.onHeartbeat(node: w1, incarnation: 1, generation: 1, now: clock.now) == [.acknowledge(node: w1, generation: 3)])
        #expect(membership.members[w1]?.lastHeard == clock.now)
        #expect(membership.onHeartbeat(node: w2, incarnation: 2, generation: 2, now: clock.now) == [.acknowledge(node: w2, generation: 3)])
        // But not older than its own incarnation, nor from the future.
        let beforeOwn = membership.onHeartbeat(node: w2, incarnation: 2, generation: 1, now: clock.now)
        #expect(beforeOwn.refusals.map(\.refusal) == [.staleGeneration(message: 1, current: 3)])
        let future = membership.onHeartbeat(node: w2, incarnation: 2, generation: 4, now: clock.now)
        #expect(future.refusals.map(\.refusal) == [.futureGeneration(message: 4, current: 3)])
        #expect(membership.generation == 3)
        // A message that acts on the generation is refused at the same generation.
        #expect(membership.admission(node: w1, incarnation: 1, generation: 1) == .staleGeneration(message: 1, current: 3))
    }

    // MARK: Leave

    @Test func leaveRemovesTheMemberAndBumpsTheGeneration() throws {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        _ = membership.onJoin(node: w2, address: "b", capacity: sampleCapacity, resuming: nil, now: clock.now)
        clock.advance(.milliseconds(10))

        let directives = membership.onLeave(node: w2, incarnation: 2, generation: 2, now: clock.now)
        #expect(membership.generation == 3)
        let departure = try requireDeparture(membership, w2, incarnation: 2, state: .left, atGeneration: 3, reason: "left the cluster")
        #expect(sameDirectives(directives, [
            .record(.left(node: w2, incarnation: 2, generation: 3)),
            .closeSession(node: w2, incarnation: 2, .fenced(node: w2, incarnation: 2, departure: departure)),
            .broadcastView(generation: 3),
        ]))
        #expect(membership.liveMembers.map(\.node) == [w1])
        
        let afterwards = membership.onHeartbeat(node: w2, incarnation: 2, generation: 3, now: clock.now)
        let refusal = try #require(afterwards.refusals.first?.refusal)
        #expect(refusal.explanation.contains("declared left at generation 3 (left the cluster)"))

        // Leaving twice, or as someone else, is refused and moves nothing.
        #expect(membership.onLeave(node: w2, incarnation: 2, generation: 3, now: clock.now).refusals.count == 1)
        #expect(membership.onLeave(node: w1, incarnation: 9, generation: 3, now: clock.now).refusals.count == 1)
        #expect(membership.onLeave(node: w1, incarnation: 1, generation: 4, now: clock.now).refusals.map(\.refusal) == [.futureGeneration(message: 4, current: 3)])
        #expect(membership.generation == 3)
        #expect(membership.liveMembers.map(\.node) == [w1])

        // A leave sent before the member saw the latest view is still a leave.
        let behind = membership.onLeave(node: w1, incarnation: 1, generation: 1, now: clock.now)
        #expect(behind.broadcasts == [4])
        #expect(membership.members.isEmpty)
    }

    // MARK: Ticks

    @Test func severalDeathsInOneTickMakeExactlyOneGeneration() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        let nodes: [NodeID] = ["a", "b", "c", "d", "e", "f"]
        for node in nodes {
            _ = membership.onJoin(node: node, address: node.value, capacity: sampleCapacity, resuming: nil, now: clock.now)
        }
        #expect(membership.generation == 6)
        clock.advance(.milliseconds(1500))
        // d drops its connection; e and f keep heartbeating; a, b, c fall silent.
        _ = membership.onDisconnect(node: "d", incarnation: 4, now: clock.now)
        _ = membership.onHeartbeat(node: "d", incarnation: 4, generation: 6, now: clock.now)
        for node in ["e", "f"] as [NodeID] {
            _ = membership.onHeartbeat(node: node, incarnation: membership.members[node]!.incarnation, generation: 6, now: clock.now)
        }
        clock.advance(.milliseconds(1100))  // a, b, c silent 2.6 s; d disconnected 1.1 s
        let tick = membership.onTick(now: clock.now)

        #expect(membership.generation == 7)
        #expect(tick.broadcasts == [7])
        let deaths = tick.deaths.sorted { $0.node < $1.node }
        #expect(deaths.map(\.node) == ["a", "b", "c", "d"])
        #expect(deaths.map(\.reason) == [.heartbeatTimeout, .heartbeatTimeout, .heartbeatTimeout, .disconnected])
        #expect(deaths.allSatisfy { $0.generation == 7 })
        #expect(Set(tick.closedSessions.map(\.node)) == ["a", "b", "c", "d"])
        #expect(tick.closedSessions.count == 4)
        #expect(membership.liveMembers.map(\.node) == ["e", "f"])
        #expect(["a", "b", "c", "d"].allSatisfy { membership.departures[NodeID($0)]?.atGeneration == 7 })
    }

    @Test func everyTickSchedulesTheNextWithinMaxTickInterval() {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        func check(_ directives: [Membership.Directive], _ comment: Comment) {
            let ticks = directives.scheduledTicks
            #expect(ticks.count == 1, comment)
            if let after = ticks.first {
                #expect(after > .zero, comment)
                #expect(after <= Self.settings.maxTickInterval, comment)
            }
        }
        // Empty: nothing to wait for but the maximum.
        #expect(membership.onTick(now: clock.now).scheduledTicks == [Self.settings.maxTickInterval])
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: clock.now)
        // 30 ms before w1 becomes suspect: the tick is asked for just past that moment.
        clock.advance(.milliseconds(970))
        #expect(membership.onTick(now: clock.now).scheduledTicks == [.milliseconds(30) + .nanoseconds(1)])
        // Through every state, at awkward times.
        for step in 0..<400 {
            clock.advance(.nanoseconds(Int64(step % 7) * 3_333_333 + 1))
            if step % 50 == 0 { _ = membership.onJoin(node: NodeID("n\(step)"), address: "x", capacity: sampleCapacity, resuming: nil, now: clock.now) }
            if step % 70 == 0, let member = membership.liveMembers.first {
                _ = membership.onDisconnect(node: member.node, incarnation: member.incarnation, now: clock.now)
            }
            check(membership.onTick(now: clock.now), "step \(step)")
        }
        // A member whose deadline is 1 ns away still gets a positive wait.
        var single = Membership(settings: Self.settings)
        let start = FakeClock().now
        _ = single.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: start)
        check(single.onTick(now: start + .seconds(1)), "1 ns before suspicion")
        check(single.onTick(now: start + .seconds(2)), "1 ns before death")
    }

    @Test func aShellFollowingScheduleTickDetectsEachChangeRightAfterItsDeadline() {
        var settings = Self.settings
        settings.suspectAfter = .milliseconds(250)
        settings.deadTimeout = .milliseconds(730)
        settings.maxTickInterval = .milliseconds(100)
        var membership = Membership(settings: settings)
        let start = FakeClock().now
        _ = membership.onJoin(node: w1, address: "a", capacity: sampleCapacity, resuming: nil, now: start)
        var now = start
        var suspectedAt: Timestamp?
        var diedAt: Timestamp?
        for _ in 0..<100 where diedAt == nil {
            let directives = membership.onTick(now: now)
            if directives.events.contains(where: { if case .suspected = $0 { true } else { false } }) { suspectedAt = now }
            if !directives.deaths.isEmpty { diedAt = now }
            now = now + directives.scheduledTicks[0]
        }
        #expect(suspectedAt == start + .milliseconds(250) + .nanoseconds(1))
        #expect(diedAt == start + .milliseconds(730) + .nanoseconds(1))
    }

    @Test
    func scheduleTickNeverExceedsASubMillisecondMaxTickInterval() {
        var settings = Self.settings
        settings.maxTickInterval = .microseconds(500)
        var membership = Membership(settings: settings)
        let ticks = membership.onTick(now: FakeClock().now).scheduledTicks
        #expect(ticks.count == 1)
        #expect(ticks.allSatisfy { $0 > .zero && $0 <= settings.maxTickInterval }, "scheduled \(ticks)")
    }
}
