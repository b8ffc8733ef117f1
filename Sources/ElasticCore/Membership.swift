/// Which workers the controller counts, and since which generation.
///
/// A value type that does no I/O, in the manner of `SWIM.Instance`: every input is a
/// `mutating func onX(…) -> [Directive]` with the time passed in, and the shell carries out the
/// directives (send a frame, close a session, append to the event log). Nothing here sleeps;
/// `onTick` says when it wants to be called next.
///
/// States: a member is `alive` while it heartbeats; `suspect` at once when its connection drops
/// (or after `suspectAfter` of silence); `dead` when it stays silent past `deadTimeout`, or stays
/// disconnected past `reconnectGrace`. Every change of the member set (a join, a death, a leave)
/// bumps the generation. A member is known by its incarnation, the generation its join created;
/// once that incarnation is dead it is fenced for good and the worker must join again.
public struct Membership: Sendable {
    /// Timeouts of the failure detector. Every field has a default; `precondition`s keep them
    /// consistent.
    public struct Settings: Sendable, Equatable {
        /// How often workers heartbeat. Told to every worker when it joins.
        public var heartbeatInterval: Duration = .milliseconds(500) {
            willSet { precondition(newValue > .zero, "heartbeatInterval must be positive") }
        }
        /// Silence after which an alive member becomes suspect.
        public var suspectAfter: Duration = .seconds(1) {
            willSet { precondition(newValue > .zero, "suspectAfter must be positive") }
        }
        /// Silence after which a member is declared dead.
        public var deadTimeout: Duration = .seconds(2) {
            willSet { precondition(newValue > .zero, "deadTimeout must be positive") }
        }
        /// How long a member whose connection dropped may take to reconnect and resume before
        /// it is declared dead (never longer than `deadTimeout` allows).
        public var reconnectGrace: Duration = .milliseconds(500) {
            willSet { precondition(newValue >= .zero, "reconnectGrace must not be negative") }
        }
        /// After a controller restart, how long the members it recovered from its durable state
        /// have to reconnect and resume before they are declared dead.
        public var recoveryGrace: Duration = .seconds(15) {
            willSet { precondition(newValue > .zero, "recoveryGrace must be positive") }
        }
        /// The longest the shell may wait between two ticks.
        public var maxTickInterval: Duration = .milliseconds(100) {
            willSet { precondition(newValue > .zero, "maxTickInterval must be positive") }
        }
        /// A gap between two ticks longer than this is the controller's own pause (SIGSTOP, a
        /// VM stall, a debugger), not its members' silence: the time past `maxTickInterval` is
        /// not charged to them. nil: `max(3 × maxTickInterval, min(1s, deadTimeout / 2))`.
        public var pauseThreshold: Duration? = nil {
            willSet { precondition(newValue.map { $0 > .zero } ?? true, "pauseThreshold must be positive") }
        }

        /// The pause threshold in force.
        public var effectivePauseThreshold: Duration {
            pauseThreshold ?? max(maxTickInterval * 3, min(.seconds(1), deadTimeout / 2))
        }

        public init() {}

        /// Returns a sentence naming the inconsistent setting, or nil.
        public var problem: String? {
            if heartbeatInterval < .milliseconds(1) {
                return "the heartbeat interval must be at least 1ms (it travels in whole milliseconds)"
            }
            if heartbeatInterval >= deadTimeout {
                return "the heartbeat interval (\(heartbeatInterval.shortDescription)) must be shorter than the dead timeout (\(deadTimeout.shortDescription))"
            }
            if suspectAfter > deadTimeout {
                return "suspect-after (\(suspectAfter.shortDescription)) must not exceed the dead timeout (\(deadTimeout.shortDescription))"
            }
            if let pauseThreshold, pauseThreshold <= maxTickInterval {
                return "the pause threshold (\(pauseThreshold.shortDescription)) must be longer than the longest wait between ticks (\(maxTickInterval.shortDescription))"
            }
            return nil
        }
    }

    public enum State: String, Sendable, Equatable, CaseIterable {
        case alive, suspect, dead, left
    }

    public enum SuspicionReason: String, Sendable, Equatable {
        case connectionLost = "connection lost"
        case silent = "missed heartbeats"
        /// Recovered from the durable state after a controller restart; not heard from since.
        case controllerRestarted = "controller restarted"
    }

    public enum DeathReason: String, Sendable, Equatable {
        /// Disconnected and did not come back within the reconnect grace.
        case disconnected = "disconnected and did not reconnect"
        /// No heartbeat within the dead timeout.
        case heartbeatTimeout = "no heartbeat within the dead timeout"
        /// The same node joined again as a new member, so its old incarnation ends.
        case replaced = "replaced by a new join of the same node"
        /// Did not come back within the recovery grace after a controller restart.
        case notRecovered = "did not reconnect after the controller restarted"
        /// Its certificate was revoked by an administrator.
        case revoked = "its certificate was revoked"
    }

    public struct Member: Sendable, Equatable {
        public let node: NodeID
        /// The generation this member's join created; its session token.
        public let incarnation: Generation
        public var address: String
        public var capacity: Capacity
        public var state: State
        public var lastHeard: Timestamp
        public var joinedAt: Timestamp
        /// Set while the member is suspect.
        public var suspicion: (reason: SuspicionReason, since: Timestamp)?

        public static func == (lhs: Member, rhs: Member) -> Bool {
            lhs.node == rhs.node && lhs.incarnation == rhs.incarnation && lhs.address == rhs.address
                && lhs.capacity == rhs.capacity && lhs.state == rhs.state && lhs.lastHeard == rhs.lastHeard
                && lhs.joinedAt == rhs.joinedAt && lhs.suspicion?.reason == rhs.suspicion?.reason
                && lhs.suspicion?.since == rhs.suspicion?.since
        }
    }

    /// What became of an incarnation that is no longer a member: kept so its messages are
    /// refused with a reason.
    public struct Departure: Sendable, Equatable {
        public let incarnation: Generation
        public let state: State
        public let atGeneration: Generation
        public let reason: String
    }

    /// Why a message was refused. Every case carries what a user needs to act.
    public enum Refusal: Sendable, Equatable {
        /// The incarnation is dead (or left): the worker must join again as a new member.
        case fenced(node: NodeID, incarnation: Generation, departure: Departure?)
        /// The message belongs to a generation older than the current one.
        case staleGeneration(message: Generation, current: Generation)
        /// The message claims a generation the controller never issued.
        case futureGeneration(message: Generation, current: Generation)

        public var explanation: String {
            switch self {
            case let .fenced(node, incarnation, departure?):
                return "member \(node) incarnation \(incarnation) was declared \(departure.state.rawValue) at generation \(departure.atGeneration) (\(departure.reason)); join again as a new member"
            case let .fenced(node, incarnation, nil):
                return "member \(node) incarnation \(incarnation) is not a member of this cluster; join again as a new member"
            case let .staleGeneration(message, current):
                return "message from generation \(message) refused: the cluster is at generation \(current)"
            case let .futureGeneration(message, current):
                return "message claims generation \(message), but the cluster is only at generation \(current)"
            }
        }
    }

    /// Something the shell must do or record.
    public enum Directive: Sendable, Equatable {
        /// Tell the node it is a member with this incarnation, at this generation.
        case welcome(node: NodeID, incarnation: Generation, generation: Generation)
        /// Answer a heartbeat with the current generation.
        case acknowledge(node: NodeID, generation: Generation)
        /// Refuse a message from this node; the shell replies with the explanation.
        case refuse(node: NodeID, Refusal)
        /// Close the connection of this incarnation, if it still has one, telling it why.
        case closeSession(node: NodeID, incarnation: Generation, Refusal)
        /// The member set changed: send the new view to every live member.
        case broadcastView(generation: Generation)
        /// Record in the event log.
        case record(Event)
        /// Call `onTick` again after this long at the latest.
        case scheduleTick(after: Duration)
    }

    /// One line of the membership event log.
    public enum Event: Sendable, Equatable {
        case joined(node: NodeID, incarnation: Generation, address: String, generation: Generation)
        case resumed(node: NodeID, incarnation: Generation, generation: Generation)
        case suspected(node: NodeID, incarnation: Generation, reason: SuspicionReason, generation: Generation)
        case recovered(node: NodeID, incarnation: Generation, generation: Generation)
        /// `silentFor` is the time since the member was last heard from when it was declared dead.
        case died(node: NodeID, incarnation: Generation, reason: DeathReason, silentFor: Duration, generation: Generation)
        case left(node: NodeID, incarnation: Generation, generation: Generation)
        case refused(node: NodeID, Refusal, generation: Generation)
        /// A new generation with the same members: a new job, or a plan that must be rebuilt.
        case opened(reason: String, generation: Generation)
        /// The controller itself did not run for `duration` (the gap between two ticks); every
        /// member's deadline moved on by `forgiven`, so nobody was charged for that silence.
        case paused(duration: Duration, forgiven: Duration, generation: Generation)
    }

    public let settings: Settings
    public private(set) var generation: Generation
    /// Live members (alive or suspect), by node.
    public private(set) var members: [NodeID: Member] = [:]
    /// The last departed incarnation of each node (a node may be live again with a newer one).
    public private(set) var departures: [NodeID: Departure] = [:]
    /// The previous tick, to tell the controller's own pauses from its members' silence.
    public private(set) var lastTick: Timestamp?
    /// Pauses of the controller found so far, and their total length.
    public private(set) var pauses: (count: Int, total: Duration) = (0, .zero)

    public init(settings: Settings = Settings(), generation: Generation = .zero) {
        self.settings = settings
        self.generation = generation
    }

    /// A membership rebuilt after a controller restart from its durable state: every member it
    /// lists is suspect until it reconnects and resumes its incarnation (within
    /// `recoveryGrace`), departures keep fencing, and a new generation opens so that nothing
    /// sent before the crash can be mistaken for what comes after.
    public init(settings: Settings = Settings(), recovering state: DurableState, now: Timestamp) {
        self.settings = settings
        self.generation = Generation(state.generation).next
        for member in state.members.values {
            let node = NodeID(member.node)
            members[node] = Member(
                node: node, incarnation: Generation(member.incarnation), address: member.address,
                capacity: Capacity(cores: member.cores, memoryBytes: member.memoryBytes, gflops: member.gflops),
                state: .suspect, lastHeard: now, joinedAt: now, suspicion: (.controllerRestarted, now))
        }
        for departure in state.departures.values {
            departures[NodeID(departure.node)] = Departure(
                incarnation: Generation(departure.incarnation), state: State(rawValue: departure.state) ?? .dead,
                atGeneration: Generation(departure.atGeneration), reason: departure.reason)
        }
    }

    /// Recovered members that have not resumed yet.
    public var awaitingRecovery: [NodeID] {
        members.values.filter { $0.suspicion?.reason == .controllerRestarted }.map(\.node).sorted()
    }

    /// Live members sorted by node id.
    public var liveMembers: [Member] { members.values.sorted { $0.node < $1.node } }

    // MARK: - Inputs

    /// A node with a valid certificate says hello. With `resuming` set, it asks to continue an
    /// earlier incarnation after a dropped connection; without, it joins as a new member.
    public mutating func onJoin(
        node: NodeID, address: String, capacity: Capacity, resuming: Generation?, now: Timestamp
    ) -> [Directive] {
        var directives: [Directive] = []
        directives.reserveCapacity(4)
        if let resuming {
            if var member = members[node], member.incarnation == resuming {
                let wasSuspect = member.state == .suspect
                member.state = .alive
                member.suspicion = nil
                member.lastHeard = now
                member.address = address
                member.capacity = capacity
                members[node] = member
                directives.append(.record(.resumed(node: node, incarnation: resuming, generation: generation)))
                if wasSuspect {
                    directives.append(.record(.recovered(node: node, incarnation: resuming, generation: generation)))
                }
                directives.append(.welcome(node: node, incarnation: resuming, generation: generation))
            } else {
                let refusal = fencing(node: node, incarnation: resuming)
                directives.append(.record(.refused(node: node, refusal, generation: generation)))
                directives.append(.refuse(node: node, refusal))
            }
            return directives
        }

        generation = generation.next
        if let old = members.removeValue(forKey: node) {
            let departure = Departure(
                incarnation: old.incarnation, state: .dead, atGeneration: generation,
                reason: DeathReason.replaced.rawValue)
            departures[node] = departure
            directives.append(.record(.died(
                node: node, incarnation: old.incarnation, reason: .replaced,
                silentFor: now.since(old.lastHeard), generation: generation)))
            directives.append(.closeSession(
                node: node, incarnation: old.incarnation,
                .fenced(node: node, incarnation: old.incarnation, departure: departure)))
        }
        members[node] = Member(
            node: node, incarnation: generation, address: address, capacity: capacity,
            state: .alive, lastHeard: now, joinedAt: now, suspicion: nil)
        directives.append(.record(.joined(node: node, incarnation: generation, address: address, generation: generation)))
        directives.append(.welcome(node: node, incarnation: generation, generation: generation))
        directives.append(.broadcastView(generation: generation))
        return directives
    }

    /// A heartbeat from `incarnation`, which last saw `generation`. A heartbeat that is behind the
    /// current generation still proves liveness (the view it lacks is on its way) and is answered
    /// with the current generation; one from a fenced incarnation is refused.
    public mutating func onHeartbeat(
        node: NodeID, incarnation: Generation, generation messageGeneration: Generation, now: Timestamp
    ) -> [Directive] {
        var directives: [Directive] = []
        directives.reserveCapacity(2)
        switch admission(node: node, incarnation: incarnation, generation: messageGeneration, allowBehind: true) {
        case .some(let refusal):
            directives.append(.record(.refused(node: node, refusal, generation: generation)))
            directives.append(.refuse(node: node, refusal))
        case .none:
            var member = members[node]!
            member.lastHeard = now
            if member.state == .suspect, member.suspicion?.reason == .silent {
                member.state = .alive
                member.suspicion = nil
                directives.append(.record(.recovered(node: node, incarnation: incarnation, generation: generation)))
            }
            members[node] = member
            directives.append(.acknowledge(node: node, generation: generation))
        }
        return directives
    }

    /// The connection of `incarnation` dropped: the member is suspect at once and has
    /// `reconnectGrace` to resume.
    public mutating func onDisconnect(node: NodeID, incarnation: Generation, now: Timestamp) -> [Directive] {
        var directives: [Directive] = []
        guard var member = members[node], member.incarnation == incarnation else { return directives }
        if member.suspicion?.reason != .connectionLost {
            member.state = .suspect
            member.suspicion = (.connectionLost, now)
            members[node] = member
            directives.append(.record(.suspected(node: node, incarnation: incarnation, reason: .connectionLost, generation: generation)))
        }
        return directives
    }

    /// A graceful leave: the member is gone at once and the generation moves on.
    public mutating func onLeave(
        node: NodeID, incarnation: Generation, generation messageGeneration: Generation, now: Timestamp
    ) -> [Directive] {
        var directives: [Directive] = []
        directives.reserveCapacity(4)
        if let refusal = admission(node: node, incarnation: incarnation, generation: messageGeneration, allowBehind: true) {
            directives.append(.record(.refused(node: node, refusal, generation: generation)))
            directives.append(.refuse(node: node, refusal))
            return directives
        }
        generation = generation.next
        members[node] = nil
        let departure = Departure(incarnation: incarnation, state: .left, atGeneration: generation, reason: "left the cluster")
        departures[node] = departure
        directives.append(.record(.left(node: node, incarnation: incarnation, generation: generation)))
        directives.append(.closeSession(node: node, incarnation: incarnation, .fenced(node: node, incarnation: incarnation, departure: departure)))
        directives.append(.broadcastView(generation: generation))
        return directives
    }

    /// Advances the failure detector to `now`. All deaths found in one tick make one generation.
    ///
    /// A gap since the previous tick longer than the pause threshold means that the controller
    /// did not run (its members' heartbeats waited in its sockets): before any deadline is
    /// checked, every member's clock moves on by the part of the gap past `maxTickInterval`, so
    /// that a member is charged only for silence while the controller was running. A member
    /// that really died in the pause is still found: its connection drop or its silence from
    /// now on runs out the usual timeouts.
    public mutating func onTick(now: Timestamp) -> [Directive] {
        var directives: [Directive] = []
        if let lastTick, now.since(lastTick) > settings.effectivePauseThreshold {
            let gap = now.since(lastTick)
            let forgiven = gap - settings.maxTickInterval
            forgive(forgiven, now: now)
            pauses = (pauses.count + 1, pauses.total + gap)
            directives.append(.record(.paused(duration: gap, forgiven: forgiven, generation: generation)))
        }
        lastTick = now
        var dying: [(Member, DeathReason)] = []
        var nextDeadline = now + settings.maxTickInterval
        for node in members.keys.sorted() {
            var member = members[node]!
            if let suspicion = member.suspicion, suspicion.reason == .controllerRestarted {
                if now.since(suspicion.since) > settings.recoveryGrace { dying.append((member, .notRecovered)) }
                nextDeadline = min(nextDeadline, deadline(of: member))
                continue
            }
            let silence = now.since(member.lastHeard)
            if silence > settings.deadTimeout {
                dying.append((member, .heartbeatTimeout))
                continue
            }
            if let suspicion = member.suspicion, suspicion.reason == .connectionLost,
               now.since(suspicion.since) > settings.reconnectGrace {
                dying.append((member, .disconnected))
                continue
            }
            if member.state == .alive, silence > settings.suspectAfter {
                member.state = .suspect
                member.suspicion = (.silent, now)
                members[node] = member
                directives.append(.record(.suspected(node: node, incarnation: member.incarnation, reason: .silent, generation: generation)))
            }
            nextDeadline = min(nextDeadline, deadline(of: member))
        }
        if !dying.isEmpty {
            generation = generation.next
            for (member, reason) in dying {
                members[member.node] = nil
                let departure = Departure(incarnation: member.incarnation, state: .dead, atGeneration: generation, reason: reason.rawValue)
                departures[member.node] = departure
                directives.append(.record(.died(
                    node: member.node, incarnation: member.incarnation, reason: reason,
                    silentFor: now.since(member.lastHeard), generation: generation)))
                directives.append(.closeSession(
                    node: member.node, incarnation: member.incarnation,
                    .fenced(node: member.node, incarnation: member.incarnation, departure: departure)))
            }
            directives.append(.broadcastView(generation: generation))
        }
        let wait = nextDeadline.since(now)
        directives.append(.scheduleTick(after: max(wait, min(.milliseconds(1), settings.maxTickInterval))))
        return directives
    }

    /// Moves every member's deadlines on by `duration` (never past `now`).
    private mutating func forgive(_ duration: Duration, now: Timestamp) {
        for node in members.keys {
            var member = members[node]!
            member.lastHeard = min(now, member.lastHeard + duration)
            if let suspicion = member.suspicion {
                member.suspicion = (suspicion.reason, min(now, suspicion.since + duration))
            }
            members[node] = member
        }
    }

    /// The member's certificate was revoked: it is dead at once, in a new generation, and its
    /// session is closed; nothing happens for a node that is not a member.
    public mutating func onRevoke(node: NodeID, now: Timestamp) -> [Directive] {
        var directives: [Directive] = []
        guard let member = members.removeValue(forKey: node) else { return directives }
        directives.reserveCapacity(3)
        generation = generation.next
        let departure = Departure(incarnation: member.incarnation, state: .dead, atGeneration: generation, reason: DeathReason.revoked.rawValue)
        departures[node] = departure
        directives.append(.record(.died(node: node, incarnation: member.incarnation, reason: .revoked, silentFor: now.since(member.lastHeard), generation: generation)))
        directives.append(.closeSession(node: node, incarnation: member.incarnation, .fenced(node: node, incarnation: member.incarnation, departure: departure)))
        directives.append(.broadcastView(generation: generation))
        return directives
    }

    /// Opens a new generation without a membership change, so that a new plan (a new job, a
    /// step abandoned on a broken link) is fenced from everything sent under the old one.
    public mutating func onNewGeneration(reason: String) -> [Directive] {
        generation = generation.next
        return [.record(.opened(reason: reason, generation: generation)), .broadcastView(generation: generation)]
    }

    // MARK: - Checks

    /// Checks a message that acts on the current generation (a step report, a state transfer):
    /// nil when it may be applied, else why it must be refused. Unlike heartbeats, such
    /// messages are refused when they are from an older generation.
    public func admission(node: NodeID, incarnation: Generation, generation messageGeneration: Generation) -> Refusal? {
        admission(node: node, incarnation: incarnation, generation: messageGeneration, allowBehind: false)
    }

    private func admission(node: NodeID, incarnation: Generation, generation messageGeneration: Generation, allowBehind: Bool) -> Refusal? {
        guard let member = members[node], member.incarnation == incarnation else {
            return fencing(node: node, incarnation: incarnation)
        }
        if messageGeneration > generation {
            return .futureGeneration(message: messageGeneration, current: generation)
        }
        if messageGeneration < incarnation || (!allowBehind && messageGeneration < generation) {
            return .staleGeneration(message: messageGeneration, current: generation)
        }
        return nil
    }

    private func fencing(node: NodeID, incarnation: Generation) -> Refusal {
        let departure = departures[node].flatMap { $0.incarnation == incarnation ? $0 : nil }
        return .fenced(node: node, incarnation: incarnation, departure: departure)
    }

    /// The earliest time at which the detector would change this member's state.
    private func deadline(of member: Member) -> Timestamp {
        if let suspicion = member.suspicion, suspicion.reason == .controllerRestarted {
            return suspicion.since + settings.recoveryGrace + .nanoseconds(1)
        }
        var deadline = member.lastHeard + settings.deadTimeout
        if member.state == .alive {
            deadline = min(deadline, member.lastHeard + settings.suspectAfter)
        }
        if let suspicion = member.suspicion, suspicion.reason == .connectionLost {
            deadline = min(deadline, suspicion.since + settings.reconnectGrace)
        }
        // Strictly past the deadline: the comparisons above use `>`.
        return deadline + .nanoseconds(1)
    }
}
