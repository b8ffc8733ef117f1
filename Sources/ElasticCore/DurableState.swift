/// What the controller must not lose when it crashes: the members and their certificates, the
/// generation, the tokens, the job, the step ledger with its data cursors, who holds which
/// stage's state, and the checkpoint catalog.
///
/// A value type with a pure reducer: the controller describes every change as a `Record`,
/// makes the record durable (a journal, or another backend), and only then acts on it. After a
/// crash, folding the records over the last snapshot gives back exactly this state. Everything
/// here is plain data (Codable) so any backend can store it; nothing depends on a clock.
public struct DurableState: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var node: String
        public var incarnation: UInt64
        public var address: String
        public var cores: UInt32
        public var memoryBytes: UInt64
        public var gflops: Double
        /// The serial of the node certificate it joined with: a node that comes back after a
        /// restart with another certificate is a new member, not this one.
        public var certificateSerial: String
        public var dataAddress: String

        public init(node: String, incarnation: UInt64, address: String, cores: UInt32, memoryBytes: UInt64, gflops: Double, certificateSerial: String, dataAddress: String) {
            self.node = node
            self.incarnation = incarnation
            self.address = address
            self.cores = cores
            self.memoryBytes = memoryBytes
            self.gflops = gflops
            self.certificateSerial = certificateSerial
            self.dataAddress = dataAddress
        }
    }

    /// How an incarnation stopped being a member (so its messages are refused with a reason).
    public struct Departure: Codable, Sendable, Equatable {
        public var node: String
        public var incarnation: UInt64
        /// `dead` or `left`.
        public var state: String
        public var atGeneration: UInt64
        public var reason: String
        /// The serial of the certificate it was a member with (nil in journals from before it was
        /// kept): a new bootstrap of the name revokes it.
        public var certificateSerial: String?

        public init(node: String, incarnation: UInt64, state: String, atGeneration: UInt64, reason: String, certificateSerial: String? = nil) {
            self.node = node
            self.incarnation = incarnation
            self.state = state
            self.atGeneration = atGeneration
            self.reason = reason
            self.certificateSerial = certificateSerial
        }
    }

    /// A node certificate that may no longer connect.
    public struct Revocation: Codable, Sendable, Equatable {
        public var serial: String
        public var node: String
        /// Wall-clock seconds since 1970.
        public var at: Int64
        public var reason: String

        public init(serial: String, node: String, at: Int64, reason: String) {
            self.serial = serial
            self.node = node
            self.at = at
            self.reason = reason
        }
    }

    public struct Token: Codable, Sendable, Equatable {
        public var id: String
        /// Hex SHA-256 of the secret; the secret itself is never stored.
        public var secretSHA256: String
        public var createdAt: Int64
        public var expiresAt: Int64?
        public var usesLeft: UInt32?
        public var uses: UInt32
        public var description: String

        public init(id: String, secretSHA256: String, createdAt: Int64, expiresAt: Int64?, usesLeft: UInt32?, uses: UInt32, description: String) {
            self.id = id
            self.secretSHA256 = secretSHA256
            self.createdAt = createdAt
            self.expiresAt = expiresAt
            self.usesLeft = usesLeft
            self.uses = uses
            self.description = description
        }
    }

    public struct Job: Codable, Sendable, Equatable {
        /// The accepted job spec, as the controller sends it to workers.
        public var json: String
        public var samples: Int
        /// Set when the job started from a checkpoint: its step and directory.
        public var resumeStep: Int
        public var resumePath: String?

        public init(json: String, samples: Int, resumeStep: Int = 0, resumePath: String? = nil) {
            self.json = json
            self.samples = samples
            self.resumeStep = resumeStep
            self.resumePath = resumePath
        }
    }

    /// One committed step (a ledger line).
    public struct Step: Codable, Sendable, Equatable {
        public var step: Int
        public var epoch: Int
        public var nextSample: Int
        public var loss: Double
        public var generation: UInt64
        public var replicasAgree: Bool

        public init(step: Int, epoch: Int, nextSample: Int, loss: Double, generation: UInt64, replicasAgree: Bool) {
            self.step = step
            self.epoch = epoch
            self.nextSample = nextSample
            self.loss = loss
            self.generation = generation
            self.replicasAgree = replicasAgree
        }

        public init(_ entry: LedgerEntry) {
            self.init(step: entry.step, epoch: entry.epoch, nextSample: entry.nextSample, loss: entry.loss,
                      generation: entry.generation.value, replicasAgree: entry.replicasAgree)
        }

        public func entry(committedAt: Timestamp) -> LedgerEntry {
            LedgerEntry(step: step, epoch: epoch, nextSample: nextSample, loss: loss, generation: Generation(generation),
                        replicasAgree: replicasAgree, committedAt: committedAt)
        }
    }

    /// Who holds each stage's state at the last committed step.
    public struct HolderSet: Codable, Sendable, Equatable {
        /// `[lower, upper)` of each stage's layers.
        public var stages: [[Int]]
        public var nodes: [[String]]

        public init(_ holders: Holders) {
            stages = holders.stages.map { [$0.lowerBound, $0.upperBound] }
            nodes = holders.nodes.map { $0.map(\.value) }
        }

        public var holders: Holders? {
            guard stages.allSatisfy({ $0.count == 2 && $0[0] < $0[1] }), stages.count == nodes.count else { return nil }
            return Holders(stages: stages.map { $0[0]..<$0[1] }, nodes: nodes.map { $0.map { NodeID($0) } })
        }
    }

    public struct Checkpoint: Codable, Sendable, Equatable {
        public var step: Int
        public var path: String
        public var rawBytes: UInt64
        public var storedBytes: UInt64

        public init(step: Int, path: String, rawBytes: UInt64, storedBytes: UInt64) {
            self.step = step
            self.path = path
            self.rawBytes = rawBytes
            self.storedBytes = storedBytes
        }
    }

    /// One change. Each is made durable before the controller acts on it.
    public enum Record: Codable, Sendable, Equatable {
        /// The generation moved on (a new plan under the same members, or a restart).
        case generation(UInt64)
        /// A member joined; its incarnation is the generation its join opened.
        case joined(Member)
        /// A member died or left.
        case departed(Departure)
        /// The token registry after a change.
        case tokens([Token])
        /// A job was accepted: it replaces the previous one, its ledger and catalog.
        case job(Job)
        /// The holders after they changed (nil: nobody holds state, e.g. after a rollback).
        case holders(HolderSet?)
        /// A step committed. Written before any worker is told to apply it.
        case committed(Step)
        /// Training went back to the checkpoint at `toStep`; steps from there on are redone.
        case rolledBack(toStep: Int, fromStep: Int)
        case checkpoint(Checkpoint)
        /// The job finished or stopped (the text says which and why).
        case jobEnded(String)
        /// A certificate was revoked.
        case revoked(Revocation)
    }

    public var generation: UInt64 = 0
    public var members: [String: Member] = [:]
    /// The last departure of each node.
    public var departures: [String: Departure] = [:]
    public var tokens: [Token] = []
    public var job: Job?
    public var jobEnded: String?
    public var ledger: [Step] = []
    public var rolledBackSteps = 0
    /// Where training starts when the ledger is empty: 0, the checkpoint the job resumed from,
    /// or the one it rolled back to.
    public var resumeStep = 0
    public var holders: HolderSet?
    /// Committed checkpoints of the job, oldest first.
    public var checkpoints: [Checkpoint] = []
    /// Revoked certificates by serial (optional in the encoding: journals from before it).
    private var revokedSerials: [String: Revocation]?
    public var revoked: [String: Revocation] { revokedSerials ?? [:] }

    public init() {}

    public mutating func apply(_ record: Record) {
        switch record {
        case .generation(let value):
            generation = max(generation, value)
        case .joined(let member):
            members[member.node] = member
            generation = max(generation, member.incarnation)
        case .departed(let departure):
            if members[departure.node]?.incarnation == departure.incarnation { members[departure.node] = nil }
            departures[departure.node] = departure
            generation = max(generation, departure.atGeneration)
        case .tokens(let list):
            tokens = list
        case .job(let accepted):
            job = accepted
            jobEnded = nil
            ledger = []
            rolledBackSteps = 0
            resumeStep = accepted.resumeStep
            holders = nil
            checkpoints = []
        case .holders(let set):
            holders = set
        case .committed(let step):
            ledger.append(step)
        case let .rolledBack(toStep, fromStep):
            ledger.removeAll { $0.step >= toStep }
            rolledBackSteps += fromStep - toStep
            resumeStep = toStep
            holders = nil
        case .checkpoint(let checkpoint):
            checkpoints.removeAll { $0.step == checkpoint.step }
            checkpoints.append(checkpoint)
            checkpoints.sort { $0.step < $1.step }
        case .jobEnded(let text):
            jobEnded = text
        case .revoked(let revocation):
            revokedSerials = (revokedSerials ?? [:]).merging([revocation.serial: revocation]) { old, _ in old }
        }
    }

    public func applying(_ records: some Sequence<Record>) -> DurableState {
        var state = self
        for record in records { state.apply(record) }
        return state
    }

    /// The step training continues from: one past the last committed step, or the step the
    /// job was resumed at.
    public var nextStep: Int { ledger.last.map { $0.step + 1 } ?? resumeStep }
}
