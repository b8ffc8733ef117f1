import ElasticCore
import ElasticTestSupport
import Foundation
import Testing

// MARK: - Seeded randomness

// SplitMix64 is ElasticCore's (W1's generator).


// MARK: - A fake clock

/// Time for the core: a Timestamp the test moves by hand. Starts away from zero so that
/// "earlier than the start" is representable.
struct FakeClock {
    var now = Timestamp(nanoseconds: 1_000_000_000_000)

    mutating func advance(_ duration: Duration) { now = now + duration }
}

// MARK: - Directive helpers

extension Array where Element == Membership.Directive {
    var events: [Membership.Event] {
        compactMap { if case .record(let event) = $0 { event } else { nil } }
    }

    var scheduledTicks: [Duration] {
        compactMap { if case .scheduleTick(let after) = $0 { after } else { nil } }
    }

    var broadcasts: [Generation] {
        compactMap { if case .broadcastView(let generation) = $0 { generation } else { nil } }
    }

    var welcomes: [(node: NodeID, incarnation: Generation, generation: Generation)] {
        compactMap { if case let .welcome(node, incarnation, generation) = $0 { (node, incarnation, generation) } else { nil } }
    }

    var closedSessions: [(node: NodeID, incarnation: Generation, refusal: Membership.Refusal)] {
        compactMap { if case let .closeSession(node, incarnation, refusal) = $0 { (node, incarnation, refusal) } else { nil } }
    }

    var refusals: [(node: NodeID, refusal: Membership.Refusal)] {
        compactMap { if case let .refuse(node, refusal) = $0 { (node, refusal) } else { nil } }
    }

    var acknowledgements: [(node: NodeID, generation: Generation)] {
        compactMap { if case let .acknowledge(node, generation) = $0 { (node, generation) } else { nil } }
    }

    var deaths: [(node: NodeID, incarnation: Generation, reason: Membership.DeathReason, silentFor: Duration, generation: Generation)] {
        events.compactMap {
            if case let .died(node, incarnation, reason, silentFor, generation) = $0 { (node, incarnation, reason, silentFor, generation) } else { nil }
        }
    }
}

/// Whether two directive lists hold the same directives, in any order (the core does not
/// promise an order, only the set of things to do).
func sameDirectives(_ actual: [Membership.Directive], _ expected: [Membership.Directive]) -> Bool {
    guard actual.count == expected.count else { return false }
    var remaining = expected
    for directive in actual {
        guard let index = remaining.firstIndex(of: directive) else { return false }
        remaining.remove(at: index)
    }
    return remaining.isEmpty
}

let sampleCapacity = Capacity(cores: 16, memoryBytes: 64 << 30, gflops: 812.5)

/// `Membership.Departure` has no public initializer: check every field of the recorded one and
/// return it, so that tests can compare whole directives with it.
func requireDeparture(
    _ membership: Membership, _ node: NodeID, incarnation: Generation, state: Membership.State,
    atGeneration: Generation, reason: String, sourceLocation: SourceLocation = #_sourceLocation
) throws -> Membership.Departure {
    let departure = try #require(membership.departures[node], "no departure recorded for \(node)", sourceLocation: sourceLocation)
    #expect(departure.incarnation == incarnation, sourceLocation: sourceLocation)
    #expect(departure.state == state, sourceLocation: sourceLocation)
    #expect(departure.atGeneration == atGeneration, sourceLocation: sourceLocation)
    #expect(departure.reason == reason, sourceLocation: sourceLocation)
    return departure
}
