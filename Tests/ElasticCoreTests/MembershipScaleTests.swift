import ElasticCore
import Testing

/// A cluster far larger than any test run: the state machine must stay cheap per event.
@Suite("Membership at scale")
struct MembershipScaleTests {
    @Test func fifteenHundredMembersJoinHeartbeatAndFourHundredDieInOneTick() {
        let count = 1_500
        let silent = Set(stride(from: 0, to: count, by: 15).flatMap { [$0, $0 + 1, $0 + 2, $0 + 3] })  // 400 nodes
        var membership = Membership()
        var clock = FakeClock()
        let nodes = (0..<count).map { NodeID("worker-\($0)") }

        for (index, node) in nodes.enumerated() {
            let directives = membership.onJoin(node: node, address: "10.0.\(index / 256).\(index % 256):7070", capacity: sampleCapacity, resuming: nil, now: clock.now)
            #expect(directives.welcomes.count == 1)
        }
        #expect(membership.generation == Generation(UInt64(count)))
        #expect(membership.members.count == count)
        #expect(Set(membership.liveMembers.map(\.incarnation)).count == count)

        // Everyone heartbeats for a while, ticking along.
        for _ in 0..<3 {
            clock.advance(.milliseconds(500))
            for node in nodes {
                let incarnation = membership.members[node]!.incarnation
                #expect(membership.onHeartbeat(node: node, incarnation: incarnation, generation: membership.generation, now: clock.now).count == 1)
            }
            #expect(membership.onTick(now: clock.now).events.isEmpty)
        }
        let lastHeardBySilent = clock.now

        // Then some fall silent while the rest carry on.
        var suspectedCount = 0
        for _ in 0..<4 {
            clock.advance(.milliseconds(500))
            for (index, node) in nodes.enumerated() where !silent.contains(index) {
                _ = membership.onHeartbeat(node: node, incarnation: membership.members[node]!.incarnation, generation: membership.generation, now: clock.now)
            }
            let tick = membership.onTick(now: clock.now)
            #expect(tick.deaths.isEmpty)
            suspectedCount += tick.events.count
        }
        #expect(suspectedCount == silent.count)  // each suspected exactly once
        #expect(membership.generation == Generation(UInt64(count)))

        clock.now = lastHeardBySilent + .seconds(2) + .nanoseconds(1)
        for (index, node) in nodes.enumerated() where !silent.contains(index) {
            _ = membership.onHeartbeat(node: node, incarnation: membership.members[node]!.incarnation, generation: membership.generation, now: clock.now)
        }
        let tick = membership.onTick(now: clock.now)
        #expect(membership.generation == Generation(UInt64(count + 1)))
        #expect(tick.broadcasts == [Generation(UInt64(count + 1))])
        #expect(tick.deaths.count == silent.count)
        #expect(tick.deaths.allSatisfy { $0.reason == .heartbeatTimeout && $0.generation == Generation(UInt64(count + 1)) })
        #expect(Set(tick.closedSessions.map(\.node)) == Set(silent.map { nodes[$0] }))
        #expect(tick.scheduledTicks.count == 1)
        #expect(membership.members.count == count - silent.count)
        #expect(membership.liveMembers.allSatisfy { $0.state == .alive })

        // The dead are fenced; the living are not.
        for (index, node) in nodes.enumerated() {
            let incarnation = Generation(UInt64(index + 1))
            let directives = membership.onHeartbeat(node: node, incarnation: incarnation, generation: membership.generation, now: clock.now)
            #expect(directives.refusals.isEmpty == !silent.contains(index))
        }
    }
}
