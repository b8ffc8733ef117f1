import ElasticCore
import Testing

/// The controller's own pauses (SIGSTOP, a VM stall) on a fake clock: a long gap between two
/// ticks is not charged to the members, and a member that really died is still found.
@Suite("Membership: the controller's pauses")
struct MembershipPauseTests {
    static let settings = MembershipTests.settings
    let nodes: [NodeID] = ["w1", "w2", "w3", "w4"]

    /// Four members heartbeating every 500 ms, ticks every 100 ms, for `seconds`.
    private func steadyCluster(seconds: Int = 3) -> (Membership, FakeClock) {
        var membership = Membership(settings: Self.settings)
        var clock = FakeClock()
        for node in nodes {
            _ = membership.onJoin(node: node, address: "\(node):7070", capacity: sampleCapacity, resuming: nil, now: clock.now)
        }
        run(&membership, &clock, seconds: Double(seconds))
        return (membership, clock)
    }

    /// Ticks every 100 ms and heartbeats from every live member (except `silent`) every 500 ms.
    private func run(_ membership: inout Membership, _ clock: inout FakeClock, seconds: Double, silent: Set<NodeID> = []) {
        for tick in 0..<Int(seconds * 10) {
            clock.advance(.milliseconds(100))
            _ = membership.onTick(now: clock.now)
            if tick % 5 == 4 {
                for member in membership.liveMembers where !silent.contains(member.node) {
                    _ = membership.onHeartbeat(node: member.node, incarnation: member.incarnation, generation: membership.generation, now: clock.now)
                }
            }
        }
    }

    @Test func aSixSecondPauseWithHeartbeatsWaitingKillsNobody() {
        var (membership, clock) = steadyCluster()
        let generation = membership.generation
        let incarnations = membership.liveMembers.map(\.incarnation)

        clock.advance(.seconds(6))  // the controller was stopped; every member kept sending
        let tick = membership.onTick(now: clock.now)
        #expect(tick.deaths.isEmpty && tick.broadcasts.isEmpty && tick.closedSessions.isEmpty, "\(tick)")
        #expect(tick.events.contains { if case .paused = $0 { true } else { false } }, "\(tick.events)")
        #expect(!tick.events.contains { if case .suspected = $0 { true } else { false } })
        guard case let .paused(duration, forgiven, atGeneration)? = tick.events.first else {
            Issue.record("the pause is the tick's first event: \(tick.events)")
            return
        }
        #expect(duration == .seconds(6))
        #expect(forgiven == duration - Self.settings.maxTickInterval)
        #expect(atGeneration == generation)
        #expect(membership.pauses.count == 1 && membership.pauses.total == duration)

        // The heartbeats that waited in the sockets arrive right after.
        for member in membership.liveMembers {
            let ack = membership.onHeartbeat(node: member.node, incarnation: member.incarnation, generation: generation, now: clock.now)
            #expect(ack == [.acknowledge(node: member.node, generation: generation)])
        }
        run(&membership, &clock, seconds: 10)
        #expect(membership.generation == generation, "no generation change")
        #expect(membership.liveMembers.map(\.incarnation) == incarnations)
        #expect(membership.liveMembers.allSatisfy { $0.state == .alive })
        #expect(membership.departures.isEmpty)
    }

    @Test func heartbeatsHandledBeforeThePauseIsNoticedAreNotMovedIntoTheFuture() {
        var (membership, clock) = steadyCluster()
        clock.advance(.seconds(6))
        for member in membership.liveMembers {
            _ = membership.onHeartbeat(node: member.node, incarnation: member.incarnation, generation: membership.generation, now: clock.now)
        }
        let tick = membership.onTick(now: clock.now)
        #expect(tick.deaths.isEmpty)
        #expect(membership.liveMembers.allSatisfy { $0.lastHeard <= clock.now })
        // From here a silent member is charged normally: dead after the dead timeout.
        run(&membership, &clock, seconds: 3, silent: ["w4"])
        #expect(membership.members["w4"] == nil)
        #expect(membership.departures["w4"]?.reason == Membership.DeathReason.heartbeatTimeout.rawValue)
    }

    @Test func aMemberThatDiedDuringThePauseIsStillDeclaredDead() {
        var (membership, clock) = steadyCluster()
        let generation = membership.generation
        clock.advance(.seconds(6))
        // w3's process died while the controller was stopped: its socket is closed, no
        // heartbeat waits for it. w4 hangs with an open connection: it just stays silent.
        _ = membership.onDisconnect(node: "w3", incarnation: membership.members["w3"]!.incarnation, now: clock.now)
        let first = membership.onTick(now: clock.now)
        #expect(first.deaths.isEmpty, "nobody dies on the tick that notices the pause")
        for node in ["w1", "w2"] as [NodeID] {
            _ = membership.onHeartbeat(node: node, incarnation: membership.members[node]!.incarnation, generation: generation, now: clock.now)
        }
        // w3 gets the reconnect grace (1 s), w4 the dead timeout (2 s), from the moment the
        // controller runs again.
        run(&membership, &clock, seconds: 1.5, silent: ["w3", "w4"])
        #expect(membership.members["w3"] == nil && membership.departures["w3"]?.reason == Membership.DeathReason.disconnected.rawValue)
        #expect(membership.members["w4"] != nil)
        run(&membership, &clock, seconds: 1, silent: ["w4"])
        #expect(membership.members["w4"] == nil && membership.departures["w4"]?.reason == Membership.DeathReason.heartbeatTimeout.rawValue)
        #expect(membership.members["w1"]?.state == .alive && membership.members["w2"]?.state == .alive)
        #expect(membership.generation > generation)
    }

    @Test func ticksAtTheUsualIntervalAreNoPause() {
        var (membership, clock) = steadyCluster(seconds: 5)
        #expect(membership.pauses.count == 0)
        // Just at the threshold is still no pause; the members are charged for it.
        clock.advance(Self.settings.effectivePauseThreshold)
        #expect(membership.onTick(now: clock.now).events.isEmpty)
        #expect(membership.pauses.count == 0)
        clock.advance(Self.settings.maxTickInterval)
        let tick = membership.onTick(now: clock.now)
        #expect(tick.events.map { if case .suspected = $0 { true } else { false } } == [true, true, true, true])
    }

    @Test func repeatedShortPausesStillLetADeadMemberDie() {
        var (membership, clock) = steadyCluster(seconds: 1)
        // The controller runs 100 ms, then stalls 1.5 s, again and again; w4 is gone.
        for _ in 0..<40 {
            clock.advance(.milliseconds(1500))
            _ = membership.onTick(now: clock.now)
            for member in membership.liveMembers where member.node != "w4" {
                _ = membership.onHeartbeat(node: member.node, incarnation: member.incarnation, generation: membership.generation, now: clock.now)
            }
            clock.advance(.milliseconds(100))
            _ = membership.onTick(now: clock.now)
        }
        #expect(membership.members["w4"] == nil, "charged 200 ms per round, w4 is dead after about 10 rounds")
        #expect(membership.liveMembers.map(\.node) == ["w1", "w2", "w3"])
        #expect(membership.pauses.count == 40)
    }

    @Test func theThresholdFollowsTheTimeouts() {
        var settings = Membership.Settings()
        #expect(settings.effectivePauseThreshold == .seconds(1))
        settings.deadTimeout = .milliseconds(600)
        #expect(settings.effectivePauseThreshold == .milliseconds(300))
        settings.deadTimeout = .milliseconds(200)
        #expect(settings.effectivePauseThreshold == .milliseconds(300), "never below 3 tick intervals")
        settings.deadTimeout = .seconds(2)
        settings.pauseThreshold = .milliseconds(50)
        #expect(settings.problem?.contains("pause threshold") == true)
        settings.pauseThreshold = .milliseconds(700)
        #expect(settings.problem == nil && settings.effectivePauseThreshold == .milliseconds(700))
    }

    @Test func aRevokedMemberDiesAtOnceInANewGeneration() {
        var (membership, clock) = steadyCluster(seconds: 1)
        let generation = membership.generation
        let incarnation = membership.members["w2"]!.incarnation
        let directives = membership.onRevoke(node: "w2", now: clock.now)
        #expect(membership.members["w2"] == nil && membership.generation == generation.next)
        #expect(directives.deaths.map(\.reason) == [.revoked] && directives.broadcasts == [generation.next])
        #expect(directives.closedSessions.map(\.node) == ["w2"])
        // It cannot resume; a node that is not a member changes nothing.
        #expect(!membership.onJoin(node: "w2", address: "a", capacity: sampleCapacity, resuming: incarnation, now: clock.now).refusals.isEmpty)
        clock.advance(.milliseconds(100))
        #expect(membership.onRevoke(node: "nobody", now: clock.now).isEmpty)
    }
}
