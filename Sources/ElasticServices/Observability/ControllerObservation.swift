import ElasticCore
import ElasticWire
import Foundation

/// What the dashboard (`/api/state`) and the controller's `/metrics` show: one consistent
/// snapshot of the controller, taken in one turn of its actor. Times are seconds since the
/// controller started (monotonic), so differences between them are durations.
public struct ControllerObservation: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var node: String
        /// alive, suspect, dead or left.
        public var state: String
        public var incarnation: UInt64
        public var address: String
        /// Milliseconds since the member was last heard from (0 for departed nodes).
        public var lastHeardMs: Int64
        public var note: String
    }

    public struct Stage: Codable, Sendable, Equatable {
        public var firstLayer: Int
        public var lastLayer: Int
        /// The node in each replica's slot.
        public var nodes: [String]
    }

    public struct Plan: Codable, Sendable, Equatable {
        public var generation: UInt64
        public var replicas: Int
        public var stages: [Stage]
        /// Members without a slot: the plan's spares and members that joined after it.
        public var spares: [String]
    }

    /// One committed step; encoded as `[step, loss, at]` (loss null when not finite).
    public struct Point: Codable, Sendable, Equatable {
        public var step: Int
        public var loss: Double
        public var at: Double

        public init(step: Int, loss: Double, at: Double) {
            self.step = step
            self.loss = loss
            self.at = at
        }

        public init(from decoder: any Decoder) throws {
            var container = try decoder.unkeyedContainer()
            step = try container.decode(Int.self)
            loss = try container.decodeIfPresent(Double.self) ?? .nan
            at = try container.decode(Double.self)
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(step)
            if loss.isFinite { try container.encode(loss) } else { try container.encodeNil() }
            try container.encode(at)
        }
    }

    /// A membership change that interrupted running training, until the next committed step.
    public struct Recovery: Codable, Sendable, Equatable {
        public var reason: String
        /// The step that was next when training was interrupted.
        public var fromStep: Int
        /// The committed step that ended the recovery (nil while it lasts).
        public var step: Int?
        public var startedAt: Double
        /// Seconds from the interruption to that commit (so far, while it lasts).
        public var seconds: Double
    }

    public struct Traffic: Codable, Sendable, Equatable {
        public var node: String
        public var bytesSent: UInt64
        public var bytesReceived: UInt64
        /// What an uncompressed float32 exchange would have sent.
        public var uncompressedBytes: UInt64
    }

    public struct Checkpoint: Codable, Sendable, Equatable {
        public var step: Int
        public var path: String
        public var rawBytes: Int
        public var storedBytes: Int
        /// From the request to the commit, when this controller wrote it.
        public var seconds: Double?
        public var committedAt: Double?
    }

    /// The newest valid checkpoint and the failures since it (a full disk, a lost writer).
    public struct CheckpointHealth: Codable, Sendable, Equatable {
        public var newestStep: Int?
        /// Seconds since the newest valid checkpoint was written.
        public var newestAgeSeconds: Double?
        /// Checkpoints that failed since the last one that was committed, and in all.
        public var consecutiveFailures: Int
        public var failures: Int
        public var lastFailureStep: Int?
        public var lastFailure: String?
    }

    public struct Training: Codable, Sendable, Equatable {
        public var job: String
        /// idle, waiting, assigning, running, finished or stopped; `detail` says why it waits or stopped.
        public var phase: String
        public var detail: String
        /// When the controller took the job.
        public var startedAt: Double
        public var committedSteps: Int
        public var nextStep: Int
        public var totalSteps: Int
        public var batch: Int
        public var samplesPerSecond: Double
        public var loss: Double?
        public var codec: String
        public var plan: Plan?
        /// Every committed step of the run, in order (after a rollback, the redone steps replace
        /// the ones they redo).
        public var curve: [Point]
        public var recoveries: [Recovery]
        public var recovering: Recovery?
        /// Each slot's exchange in its last reported step.
        public var traffic: [Traffic]
        /// Every reported step of this job, summed over slots.
        public var trafficTotal: Traffic
        public var checkpoints: [Checkpoint]
        /// Nil when the job takes no checkpoints.
        public var checkpointHealth: CheckpointHealth?
        public var replans: Int
        public var rolledBackSteps: Int
    }

    public struct Event: Codable, Sendable, Equatable {
        /// ISO 8601 wall time.
        public var time: String
        /// joined, died, generation, … for membership events; training, checkpoint for others.
        public var kind: String
        public var text: String
    }

    public var generation: UInt64
    public var uptime: Double
    /// Times the controller found it had not run for a while (SIGSTOP, a VM stall), and their
    /// total length in seconds: time not charged to the members.
    public var pauses: Int
    public var pausedSeconds: Double
    public var members: [Member]
    public var training: Training?
    /// The most recent events, oldest first.
    public var events: [Event]

    /// Members (departed ones included) counted by state, every state present.
    public var membersByState: [String: Int] {
        var counts = Dictionary(uniqueKeysWithValues: Membership.State.allCases.map { ($0.rawValue, 0) })
        for member in members { counts[member.state, default: 0] += 1 }
        return counts
    }

    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return (try? Array(encoder.encode(self))) ?? Array(#"{"error":"cannot encode the state"}"#.utf8)
    }
}

extension ControllerObservation {
    /// Builds the snapshot from the controller actor's state.
    static func gather(membership: Membership, training: ControllerTraining?, events: [EventLog.RecentEvent], startedAt: Timestamp, now: Timestamp) -> ControllerObservation {
        func seconds(_ time: Timestamp) -> Double { Double(time.since(startedAt).nanosecondsClamped) / 1e9 }
        var members = membership.liveMembers.map {
            Member(node: $0.node.value, state: $0.state.rawValue, incarnation: $0.incarnation.value, address: $0.address,
                   lastHeardMs: now.since($0.lastHeard).milliseconds, note: $0.suspicion.map { $0.reason.rawValue } ?? "")
        }
        for (node, departure) in membership.departures.sorted(by: { $0.key < $1.key }) where membership.members[node] == nil {
            members.append(Member(node: node.value, state: departure.state.rawValue, incarnation: departure.incarnation.value,
                                  address: "", lastHeardMs: 0, note: departure.reason))
        }
        return ControllerObservation(
            generation: membership.generation.value, uptime: seconds(now),
            pauses: membership.pauses.count, pausedSeconds: Double(membership.pauses.total.nanosecondsClamped) / 1e9, members: members,
            training: training.map { gather($0, live: membership.liveMembers.map(\.node), seconds: seconds, now: now) },
            events: events.map { Event(time: $0.time, kind: $0.kind, text: $0.text) })
    }

    private static func gather(_ training: ControllerTraining, live: [NodeID], seconds: (Timestamp) -> Double, now: Timestamp) -> Training {
        let coordinator = training.coordinator
        let plan = coordinator.plan.map { plan in
            // A member that joined after the plan was made is a spare too (the plan stands).
            let workers = Set(plan.workers)
            return Plan(generation: plan.generation.value, replicas: plan.replicas,
                        stages: zip(plan.stages, plan.nodes).map { Stage(firstLayer: $0.lowerBound, lastLayer: $0.upperBound - 1, nodes: $1.map(\.value)) },
                        spares: Set(plan.spares + live.filter { !workers.contains($0) }).sorted().map(\.value))
        }
        let recoveries = training.recoveries.map {
            Recovery(reason: $0.reason, fromStep: $0.fromStep, step: $0.step, startedAt: seconds($0.startedAt),
                     seconds: Double($0.endedAt.since($0.startedAt).nanosecondsClamped) / 1e9)
        }
        let recovering = training.recovering.map {
            Recovery(reason: $0.reason, fromStep: $0.fromStep, step: nil, startedAt: seconds($0.since),
                     seconds: Double(now.since($0.since).nanosecondsClamped) / 1e9)
        }
        let traffic = (coordinator.plan?.workers ?? []).compactMap { training.traffic[$0] }.map {
            Traffic(node: $0.node.value, bytesSent: $0.bytesSent, bytesReceived: $0.bytesReceived, uncompressedBytes: $0.uncompressedBytes)
        }
        let total = training.trafficTotal
        let checkpoints = (training.checkpoints?.written ?? []).map { summary in
            let timing = training.checkpoints?.timings[summary.step]
            return Checkpoint(step: summary.step, path: summary.path, rawBytes: summary.rawBytes, storedBytes: summary.storedBytes,
                              seconds: timing.map { Double($0.took.nanosecondsClamped) / 1e9 }, committedAt: timing.map { seconds($0.at) })
        }
        return Training(
            job: training.job.spec.name, phase: coordinator.phase.name, detail: coordinator.phase.detail,
            startedAt: seconds(training.createdAt), committedSteps: coordinator.ledger.count, nextStep: coordinator.nextStep,
            totalSteps: coordinator.totalSteps, batch: training.job.spec.batch, samplesPerSecond: training.samplesPerSecond(),
            loss: coordinator.ledger.last?.loss, codec: training.job.spec.compression?.codec ?? "none", plan: plan,
            curve: coordinator.ledger.map { Point(step: $0.step, loss: $0.loss, at: seconds($0.committedAt)) },
            recoveries: recoveries, recovering: recovering, traffic: traffic,
            trafficTotal: Traffic(node: "", bytesSent: total.bytesSent, bytesReceived: total.bytesReceived, uncompressedBytes: total.uncompressedBytes),
            checkpoints: checkpoints, checkpointHealth: training.checkpoints.map { health($0.health(now: Date())) },
            replans: coordinator.replans, rolledBackSteps: coordinator.rolledBackSteps)
    }

    private static func health(_ health: TrainingStatus.CheckpointHealth) -> CheckpointHealth {
        CheckpointHealth(
            newestStep: health.newestStep.map { Int($0) }, newestAgeSeconds: health.newestAgeMilliseconds.map { Double($0) / 1000 },
            consecutiveFailures: Int(health.consecutiveFailures), failures: Int(health.failures),
            lastFailureStep: health.lastFailure.map { Int($0.step) }, lastFailure: health.lastFailure?.reason)
    }
}
