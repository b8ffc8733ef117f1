import ElasticTestSupport
import ElasticCore
import Testing

/// An independent model of the membership rules, written from Membership.swift's documentation,
/// in plain integers (nanoseconds, generation numbers) so that it shares no arithmetic with the
/// code under test:
///
/// - a fresh join creates a new member whose incarnation is the next generation, replacing any
///   live incarnation of the same node;
/// - a join that resumes the live incarnation of its node makes it alive and heard from now; any
///   other resume is refused;
/// - a heartbeat (or leave) is admitted when it comes from the live incarnation of its node and
///   carries a generation between that incarnation and the current one; a heartbeat makes the
///   member heard from now and ends a suspicion of silence (not one of a lost connection);
/// - a disconnect of the live incarnation makes it suspect (connection lost) from now, unless it
///   already is;
/// - a tick kills every member silent for more than the dead timeout, or disconnected for more
///   than the reconnect grace, and makes every alive member silent for more than suspectAfter
///   suspect;
/// - a tick that comes more than the pause threshold after the previous tick first moves every
///   member's last-heard time and suspicion start on by the gap less the longest tick
///   interval, never past now (the controller's own pause is not charged to its members);
/// - the generation moves by one for each event that changes the member set.
struct MembershipModel {
    enum Suspicion: Equatable {
        case none
        case silent(since: UInt64)
        case connectionLost(since: UInt64)
    }

    struct Member: Equatable {
        var incarnation: UInt64
        var lastHeard: UInt64
        var suspicion: Suspicion
    }

    let suspectAfter: UInt64
    let deadTimeout: UInt64
    let reconnectGrace: UInt64
    let maxTick: UInt64
    let pauseThreshold: UInt64
    var generation: UInt64 = 0
    var members: [String: Member] = [:]
    var lastTick: UInt64?

    init(suspectAfter: UInt64, deadTimeout: UInt64, reconnectGrace: UInt64, maxTick: UInt64, pauseThreshold: UInt64) {
        self.suspectAfter = suspectAfter
        self.deadTimeout = deadTimeout
        self.reconnectGrace = reconnectGrace
        self.maxTick = maxTick
        self.pauseThreshold = pauseThreshold
    }

    var liveSet: Set<Pair> { Set(members.map { Pair(node: $0.key, incarnation: $0.value.incarnation) }) }

    /// Returns whether the join was accepted.
    mutating func join(_ node: String, resuming: UInt64?, now: UInt64) -> Bool {
        if let resuming {
            guard var member = members[node], member.incarnation == resuming else { return false }
            member.lastHeard = now
            member.suspicion = .none
            members[node] = member
            return true
        }
        generation += 1
        members[node] = Member(incarnation: generation, lastHeard: now, suspicion: .none)
        return true
    }

    func admits(_ node: String, incarnation: UInt64, generation message: UInt64) -> Bool {
        guard let member = members[node], member.incarnation == incarnation else { return false }
        return incarnation <= message && message <= generation
    }

    mutating func heartbeat(_ node: String, incarnation: UInt64, generation message: UInt64, now: UInt64) -> Bool {
        guard admits(node, incarnation: incarnation, generation: message) else { return false }
        members[node]!.lastHeard = now
        if case .silent = members[node]!.suspicion { members[node]!.suspicion = .none }
        return true
    }

    mutating func disconnect(_ node: String, incarnation: UInt64, now: UInt64) {
        guard let member = members[node], member.incarnation == incarnation else { return }
        if case .connectionLost = member.suspicion { return }
        members[node]!.suspicion = .connectionLost(since: now)
    }

    mutating func leave(_ node: String, incarnation: UInt64, generation message: UInt64) -> Bool {
        guard admits(node, incarnation: incarnation, generation: message) else { return false }
        members[node] = nil
        generation += 1
        return true
    }

    /// Returns the members that died, and whether the tick found a pause.
    mutating func tick(now: UInt64) -> (died: Set<Pair>, paused: Bool) {
        var paused = false
        if let lastTick, now - lastTick > pauseThreshold {
            paused = true
            let forgiven = now - lastTick - maxTick
            for node in members.keys {
                members[node]!.lastHeard = min(now, members[node]!.lastHeard + forgiven)
                switch members[node]!.suspicion {
                case .none: break
                case .silent(let since): members[node]!.suspicion = .silent(since: min(now, since + forgiven))
                case .connectionLost(let since): members[node]!.suspicion = .connectionLost(since: min(now, since + forgiven))
                }
            }
        }
        lastTick = now
        var died = Set<Pair>()
        for (node, member) in members {
            let silence = now > member.lastHeard ? now - member.lastHeard : 0
            var dies = silence > deadTimeout
            if case .connectionLost(let since) = member.suspicion, now > since, now - since > reconnectGrace { dies = true }
            if dies {
                died.insert(Pair(node: node, incarnation: member.incarnation))
            } else if member.suspicion == .none, silence > suspectAfter {
                members[node]!.suspicion = .silent(since: now)
            }
        }
        for pair in died { members[pair.node] = nil }
        if !died.isEmpty { generation += 1 }
        return (died, paused)
    }
}

struct Pair: Hashable, CustomStringConvertible {
    var node: String
    var incarnation: UInt64
    var description: String { "\(node)#\(incarnation)" }
}

@Suite("Membership against a model")
struct MembershipModelTests {
    static let sequences = 200
    static let eventsPerSequence = 300
    static let nodes = ["a", "b", "c", "d", "e", "f"]

    /// What the random sequences exercised, so that a generator that stopped reaching some rule
    /// is noticed.
    struct Coverage {
        var counts: [String: Int] = [:]
        mutating func count(_ what: String) { counts[what, default: 0] += 1 }
    }

    @Test func randomSequencesAgreeWithTheModel() {
        let seed = TestSeed.make("Membership model")
        var rng = SplitMix64(seed: seed)
        var coverage = Coverage()
        for sequence in 0..<Self.sequences {
            guard runSequence(sequence, rng: &rng, seed: seed, coverage: &coverage) else { return }  // stop at the first failing sequence
        }
        print("membership model coverage: \(coverage.counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
        for what in ["join", "replaced", "resume accepted", "resume refused", "heartbeat accepted", "heartbeat refused",
                     "heartbeat behind", "disconnect", "leave accepted", "leave refused", "suspected silent",
                     "died heartbeatTimeout", "died disconnected", "recovered", "tick with several deaths", "pause"] {
            #expect(coverage.counts[what, default: 0] >= 20, "the random events reached '\(what)' only \(coverage.counts[what, default: 0]) times")
        }
    }

    /// Runs one random sequence; returns false after the first failed check.
    func runSequence(_ sequence: Int, rng: inout SplitMix64, seed: UInt64, coverage: inout Coverage) -> Bool {
        let ms: UInt64 = 1_000_000
        // Random but consistent settings, so boundaries differ between sequences (a grace of
        // zero, a grace longer than the dead timeout, suspectAfter equal to it...).
        let deadTimeout = UInt64.random(in: 200...2_000, using: &rng) * ms
        let suspectAfter = [deadTimeout, deadTimeout / 2, UInt64.random(in: 1...(deadTimeout / ms), using: &rng) * ms].randomElement(using: &rng)!
        let reconnectGrace = [0, deadTimeout, deadTimeout * 2, UInt64.random(in: 0...2_000, using: &rng) * ms].randomElement(using: &rng)!
        let maxTick = UInt64.random(in: 1...250, using: &rng) * ms
        var settings = Membership.Settings()
        settings.deadTimeout = .nanoseconds(Int64(deadTimeout))
        settings.suspectAfter = .nanoseconds(Int64(suspectAfter))
        settings.reconnectGrace = .nanoseconds(Int64(reconnectGrace))
        settings.maxTickInterval = .nanoseconds(Int64(maxTick))
        settings.heartbeatInterval = .nanoseconds(Int64(deadTimeout / 4))
        // The pause threshold: the default, or a chosen one (above the longest tick interval).
        let pauseThreshold: UInt64
        if Bool.random(using: &rng) {
            pauseThreshold = max(3 * maxTick, min(1_000 * ms, deadTimeout / 2))
        } else {
            pauseThreshold = maxTick + UInt64.random(in: 1...(4 * deadTimeout), using: &rng)
            settings.pauseThreshold = .nanoseconds(Int64(pauseThreshold))
        }
        #expect(settings.problem == nil)

        let origin: UInt64 = 5_000_000_000
        var now = origin
        var membership = Membership(settings: settings)
        var model = MembershipModel(suspectAfter: suspectAfter, deadTimeout: deadTimeout, reconnectGrace: reconnectGrace,
                                    maxTick: maxTick, pauseThreshold: pauseThreshold)
        /// Every incarnation ever issued to each node: the stale ones are replayed.
        var issued: [String: [UInt64]] = [:]
        var history: [String] = []

        for step in 0..<Self.eventsPerSequence {
            let before = membership
            let roll = Int.random(in: 0..<100, using: &rng)
            // Joins pick any node; the other events mostly pick a live one, so that they are not
            // all refused.
            let modelNodes = model.members.keys.sorted()
            let node = roll >= 14 && !modelNodes.isEmpty && Int.random(in: 0..<4, using: &rng) > 0
                ? modelNodes.randomElement(using: &rng)! : Self.nodes.randomElement(using: &rng)!
            let live = model.members[node]?.incarnation
            func someIncarnation() -> UInt64 {
                // Mostly the live one; else an older one of this node, or one never issued to it.
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<7 where live != nil: return live!
                case 0..<9 where !(issued[node] ?? []).isEmpty: return issued[node]!.randomElement(using: &rng)!
                default: return UInt64.random(in: 0...(model.generation + 2), using: &rng)
                }
            }
            func someGeneration(for incarnation: UInt64) -> UInt64 {
                switch Int.random(in: 0..<8, using: &rng) {
                case 0..<3: return model.generation
                case 3: return model.generation + 1
                case 4 where incarnation > 0: return incarnation - 1
                case 5: return incarnation
                default: return UInt64.random(in: min(incarnation, model.generation)...model.generation, using: &rng)
                }
            }

            let event: String
            var directives: [Membership.Directive]
            var accepted = true
            var removedByModel = Set<Pair>()
            let timestamp = Timestamp(nanoseconds: now)
            switch roll {
            case 0..<14:
                event = "join \(node)"
                let replaced = live.map { Pair(node: node, incarnation: $0) }
                directives = membership.onJoin(node: NodeID(node), address: "\(node):\(step)", capacity: sampleCapacity, resuming: nil, now: timestamp)
                _ = model.join(node, resuming: nil, now: now)
                issued[node, default: []].append(model.generation)
                if let replaced { removedByModel.insert(replaced) }
            case 14..<22:
                let incarnation = someIncarnation()
                event = "resume \(node)#\(incarnation)"
                directives = membership.onJoin(node: NodeID(node), address: "\(node):r\(step)", capacity: sampleCapacity, resuming: Generation(incarnation), now: timestamp)
                accepted = model.join(node, resuming: incarnation, now: now)
            case 22..<50:
                let incarnation = someIncarnation()
                let generation = someGeneration(for: incarnation)
                event = "heartbeat \(node)#\(incarnation) at g\(generation)"
                directives = membership.onHeartbeat(node: NodeID(node), incarnation: Generation(incarnation), generation: Generation(generation), now: timestamp)
                accepted = model.heartbeat(node, incarnation: incarnation, generation: generation, now: now)
            case 50..<58:
                let incarnation = someIncarnation()
                event = "disconnect \(node)#\(incarnation)"
                directives = membership.onDisconnect(node: NodeID(node), incarnation: Generation(incarnation), now: timestamp)
                model.disconnect(node, incarnation: incarnation, now: now)
            case 58..<62:
                let incarnation = someIncarnation()
                let generation = someGeneration(for: incarnation)
                event = "leave \(node)#\(incarnation) at g\(generation)"
                directives = membership.onLeave(node: NodeID(node), incarnation: Generation(incarnation), generation: Generation(generation), now: timestamp)
                accepted = model.leave(node, incarnation: incarnation, generation: generation)
                if accepted { removedByModel.insert(Pair(node: node, incarnation: incarnation)) }
            case 62..<80:
                // Advance the clock: small steps, big ones, and steps that land on a deadline or
                // one nanosecond past it.
                var amount: UInt64
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: amount = UInt64.random(in: 0...3, using: &rng)
                case 1: amount = UInt64.random(in: 0...(maxTick * 2), using: &rng)
                case 2: amount = UInt64.random(in: 0...(deadTimeout + reconnectGrace), using: &rng)
                default:
                    let deadlines = model.members.values.flatMap { member -> [UInt64] in
                        var list = [member.lastHeard + suspectAfter, member.lastHeard + deadTimeout]
                        if case .connectionLost(let since) = member.suspicion { list.append(since + reconnectGrace) }
                        return list
                    }.filter { $0 >= now }.sorted()  // sorted: dictionary order differs between runs
                    let target = deadlines.randomElement(using: &rng) ?? now
                    amount = target - now + UInt64.random(in: 0...1, using: &rng)
                }
                event = "advance \(amount)ns"
                now += amount
                directives = []
            default:
                event = "tick"
                directives = membership.onTick(now: timestamp)
                let (died, paused) = model.tick(now: now)
                removedByModel = died
                let reported = directives.events.contains { if case .paused = $0 { true } else { false } }
                if paused { coverage.count("pause") }
                if paused != reported {
                    Issue.record("the tick \(reported ? "reported" : "did not report") a pause, the model \(paused ? "found" : "did not find") one — seed \(seed), sequence \(sequence), step \(step)")
                    return false
                }
            }
            history.append("\(step): \(event)")
            let kind = String(event.prefix { $0 != " " })
            switch kind {
            case "join": coverage.count(directives.deaths.isEmpty ? "join" : "replaced")
            case "resume", "heartbeat", "leave": coverage.count("\(kind) \(accepted ? "accepted" : "refused")")
            case "disconnect": coverage.count("disconnect")
            default: break
            }
            if kind == "heartbeat", accepted, directives.acknowledgements.first.map({ event.hasSuffix("at g\($0.generation)") }) == false {
                coverage.count("heartbeat behind")
            }
            for death in directives.deaths { coverage.count("died \(death.reason)") }
            if directives.deaths.count > 1 { coverage.count("tick with several deaths") }
            for event in directives.events {
                if case .suspected(_, _, .silent, _) = event { coverage.count("suspected silent") }
                if case .recovered = event { coverage.count("recovered") }
            }

            // Checks after every step.
            var ok = true
            func check(_ condition: Bool, _ what: @autoclosure () -> String) {
                if !condition {
                    ok = false
                    let recent = history.suffix(25).joined(separator: "\n")
                    Issue.record("\(what()) — seed \(seed), sequence \(sequence), step \(step) (\(event)); recent events:\n\(recent)")
                }
            }
            let actualSet = Set(membership.members.values.map { Pair(node: $0.node.value, incarnation: $0.incarnation.value) })
            let setChanged = actualSet != Set(before.members.values.map { Pair(node: $0.node.value, incarnation: $0.incarnation.value) })
            check(membership.generation >= before.generation, "generation went down from \(before.generation) to \(membership.generation)")
            check(setChanged == (membership.generation != before.generation), "generation \(before.generation)→\(membership.generation) while the member set \(setChanged ? "changed" : "did not change")")
            if setChanged { check(membership.generation.value == before.generation.value + 1, "one event moved the generation by more than one") }
            check(actualSet == model.liveSet, "live set \(actualSet.sorted { $0.description < $1.description }) but the model expects \(model.liveSet.sorted { $0.description < $1.description })")
            check(membership.generation.value == model.generation, "generation \(membership.generation) but the model expects \(model.generation)")
            let liveNodes = membership.liveMembers.map(\.node)
            check(Set(liveNodes).count == liveNodes.count, "two live members share a node")
            check(Set(membership.liveMembers.map(\.incarnation)).count == liveNodes.count, "two live members share an incarnation")
            check(liveNodes == liveNodes.sorted(), "liveMembers is not sorted by node")
            for (key, member) in membership.members {
                check(key == member.node, "member \(member.node) is filed under \(key)")
                check(member.incarnation <= membership.generation, "incarnation \(member.incarnation) is beyond generation \(membership.generation)")
                guard let expected = model.members[key.value] else { continue }
                check(member.lastHeard.nanoseconds == expected.lastHeard, "\(key) last heard \(member.lastHeard), model says \(expected.lastHeard)")
                switch expected.suspicion {
                case .none:
                    check(member.state == .alive && member.suspicion == nil, "\(key) is \(member.state), the model says alive")
                case .silent(let since):
                    check(member.state == .suspect && member.suspicion?.reason == .silent && member.suspicion?.since.nanoseconds == since,
                          "\(key) is \(member.state) \(String(describing: member.suspicion)), the model says silent since \(since)")
                case .connectionLost(let since):
                    check(member.state == .suspect && member.suspicion?.reason == .connectionLost && member.suspicion?.since.nanoseconds == since,
                          "\(key) is \(member.state) \(String(describing: member.suspicion)), the model says disconnected since \(since)")
                }
            }

            // The directives agree with what happened.
            let removed = Set(before.members.values.map { Pair(node: $0.node.value, incarnation: $0.incarnation.value) }).subtracting(actualSet)
            check(removed == removedByModel, "removed \(removed), the model removed \(removedByModel)")
            let closed = Set(directives.closedSessions.map { Pair(node: $0.node.value, incarnation: $0.incarnation.value) })
            check(closed == removed && directives.closedSessions.count == removed.count, "closed sessions \(closed) but removed \(removed)")
            for session in directives.closedSessions {
                guard case let .fenced(node, incarnation, departure?) = session.refusal else {
                    check(false, "closeSession without a departure: \(session.refusal)")
                    continue
                }
                check(node == session.node && incarnation == session.incarnation, "closeSession names the wrong member")
                check(departure.atGeneration == membership.generation && departure.incarnation == incarnation, "departure \(departure) at generation \(membership.generation)")
                check(membership.departures[node] == departure, "departure not kept for \(node)")
            }
            check(directives.broadcasts == (setChanged ? [membership.generation] : []), "broadcasts \(directives.broadcasts) when the set \(setChanged ? "changed" : "did not change")")
            let refusals = directives.refusals
            check(refusals.isEmpty == accepted, "accepted by the model: \(accepted), refusals: \(refusals)")
            check(refusals.count <= 1, "several refusals")
            if event.hasPrefix("join") || event.hasPrefix("resume") {
                let welcomes = directives.welcomes
                check(welcomes.count == (accepted ? 1 : 0), "welcomes \(welcomes)")
                if let welcome = welcomes.first {
                    check(welcome.generation == membership.generation, "welcome at \(welcome.generation), generation is \(membership.generation)")
                    check(membership.members[welcome.node]?.incarnation == welcome.incarnation, "welcomed an incarnation that is not live")
                }
            } else {
                check(directives.welcomes.isEmpty, "unexpected welcome")
            }
            if event.hasPrefix("heartbeat") {
                check(directives.acknowledgements.map(\.generation) == (accepted ? [membership.generation] : []), "acknowledgements \(directives.acknowledgements)")
            }
            if event == "tick" {
                let ticks = directives.scheduledTicks
                check(ticks.count == 1 && ticks[0] > .zero && ticks[0] <= settings.maxTickInterval, "scheduleTick \(ticks) with maxTickInterval \(settings.maxTickInterval)")
            } else {
                check(directives.scheduledTicks.isEmpty, "scheduleTick outside onTick")
            }
            if !ok { return false }
        }
        return true
    }
}
