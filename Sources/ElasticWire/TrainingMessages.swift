import ElasticCore

/// The plan of a generation as sent to its workers, with the job and where to reach each peer.
public struct Assignment: WireCodable {
    public var plan: Plan
    /// `dataAddresses[node]`: the node's data-plane listener.
    public var dataAddresses: [NodeID: String]
    /// The job spec as JSON (the controller's copy, byte for byte).
    public var jobJSON: [UInt8]
    /// The first step to run: one past the last committed step. Every holder of layer state
    /// must have applied exactly the steps before it.
    public var nextStep: UInt64
    /// State copies to make before training resumes.
    public var transfers: [StateTransfer]
    /// A checkpoint directory (written at `nextStep`) that every slot without a copy and without
    /// state at `nextStep` loads its layers from; empty: none.
    public var restore: String
    /// The generation in which step `nextStep - 1` committed (zero when no step has). A holder
    /// that computed exactly that step in exactly that generation, and missed the commit (the
    /// controller restarted in between), applies it before taking part.
    public var lastCommitGeneration: Generation

    public init(plan: Plan, dataAddresses: [NodeID: String], jobJSON: [UInt8], nextStep: UInt64, transfers: [StateTransfer] = [], restore: String = "", lastCommitGeneration: Generation = .zero) {
        self.plan = plan
        self.dataAddresses = dataAddresses
        self.jobJSON = jobJSON
        self.nextStep = nextStep
        self.transfers = transfers
        self.restore = restore
        self.lastCommitGeneration = lastCommitGeneration
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(plan.generation.value)
        writer.write(count: plan.stages.count)
        for range in plan.stages {
            writer.write(UInt32(range.lowerBound))
            writer.write(UInt32(range.upperBound))
        }
        writer.write(UInt32(plan.replicas))
        for row in plan.nodes {
            for node in row {
                writer.write(node.value)
                writer.write(dataAddresses[node] ?? "")
            }
        }
        writer.write(count: plan.spares.count)
        for spare in plan.spares { writer.write(spare.value) }
        writer.write(bytes: jobJSON)
        writer.write(nextStep)
        writer.write(count: transfers.count)
        for transfer in transfers {
            writer.write(UInt32(transfer.stage))
            writer.write(transfer.from.value)
            writer.write(transfer.to.value)
        }
        // Where to reach the sources that hold no slot (a spare, a member leaving gracefully).
        let slots = Set(plan.workers)
        let outside = Set(transfers.map(\.from)).subtracting(slots).sorted()
        writer.write(count: outside.count)
        for node in outside {
            writer.write(node.value)
            writer.write(dataAddresses[node] ?? "")
        }
        writer.write(restore)
        writer.write(lastCommitGeneration.value)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let generation = Generation(try reader.read(UInt64.self))
        let stageCount = try reader.readCount(minimumItemSize: 8)
        var stages: [Range<Int>] = []
        var expectedStart = 0
        for _ in 0..<stageCount {
            let lower = Int(try reader.read(UInt32.self))
            let upper = Int(try reader.read(UInt32.self))
            guard lower == expectedStart, upper > lower else {
                throw WireError(.invalidValue, "plan stages must be contiguous, non-empty layer ranges")
            }
            stages.append(lower..<upper)
            expectedStart = upper
        }
        let replicas = Int(try reader.read(UInt32.self))
        guard stageCount >= 1, replicas >= 1 else {
            throw WireError(.invalidValue, "a plan of \(stageCount)×\(replicas) slots is empty")
        }
        guard replicas <= reader.remaining / 8 / stageCount else {
            throw WireError(.truncated, "a plan of \(stageCount)×\(replicas) slots cannot fit in the \(reader.remaining) bytes left")
        }
        var nodes: [[NodeID]] = []
        var addresses: [NodeID: String] = [:]
        for _ in 0..<stageCount {
            var row: [NodeID] = []
            for _ in 0..<replicas {
                let node = NodeID(try reader.readString(limit: 64))
                let address = try reader.readString(limit: 256)
                row.append(node)
                addresses[node] = address
            }
            nodes.append(row)
        }
        let spareCount = try reader.readCount(minimumItemSize: 4)
        var spares: [NodeID] = []
        for _ in 0..<spareCount { spares.append(NodeID(try reader.readString(limit: 64))) }
        guard Set(nodes.flatMap { $0 } + spares).count == stageCount * replicas + spareCount else {
            throw WireError(.invalidValue, "a node appears twice in the plan")
        }
        plan = Plan(generation: generation, stages: stages, replicas: replicas, nodes: nodes, spares: spares)
        jobJSON = try reader.readBytes(limit: 256 << 10)
        nextStep = try reader.read(UInt64.self)
        let transferCount = try reader.readCount(minimumItemSize: 12)
        var listed: [(stage: Int, from: NodeID, to: NodeID)] = []
        for _ in 0..<transferCount {
            let stage = Int(try reader.read(UInt32.self))
            let from = NodeID(try reader.readString(limit: 64))
            let to = NodeID(try reader.readString(limit: 64))
            listed.append((stage, from, to))
        }
        let outsideCount = try reader.readCount(minimumItemSize: 8)
        var outside: Set<NodeID> = []
        for _ in 0..<outsideCount {
            let node = NodeID(try reader.readString(limit: 64))
            let address = try reader.readString(limit: 256)
            guard addresses[node] == nil, outside.insert(node).inserted else {
                throw WireError(.invalidValue, "the source address list names \(node) twice or a slot of the plan")
            }
            addresses[node] = address
        }
        dataAddresses = addresses
        // A copy goes to a slot of the plan, for one of its stages, from another slot or from a
        // source listed with its address.
        let slots = Set(nodes.flatMap { $0 })
        var transfers: [StateTransfer] = []
        for (stage, from, to) in listed {
            guard stage < stageCount, slots.contains(from) || outside.contains(from), slots.contains(to), from != to else {
                throw WireError(.invalidValue, "a state transfer must go to a slot of the plan, from a slot or a listed source, for one of its stages")
            }
            transfers.append(StateTransfer(stage: stage, from: from, to: to))
        }
        self.transfers = transfers
        restore = try reader.readString(limit: 4096)
        lastCommitGeneration = Generation(try reader.read(UInt64.self))
    }
}

/// A stage's part of a checkpoint, as its writer reports it.
public struct CheckpointWritten: WireCodable {
    public var step: UInt64
    public var stage: UInt32
    /// Empty when the part is written and fsynced; otherwise what went wrong.
    public var error: String
    public var rawBytes: UInt64
    public var storedBytes: UInt64
    /// From the snapshot to the fsynced part record.
    public var writeTime: Duration

    public init(step: UInt64, stage: UInt32, error: String = "", rawBytes: UInt64 = 0, storedBytes: UInt64 = 0, writeTime: Duration = .zero) {
        self.step = step
        self.stage = stage
        self.error = error
        self.rawBytes = rawBytes
        self.storedBytes = storedBytes
        self.writeTime = writeTime
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(step)
        writer.write(stage)
        writer.write(error)
        writer.write(rawBytes)
        writer.write(storedBytes)
        writer.write(UInt64(clamping: writeTime.milliseconds))
    }

    public init(from reader: inout WireReader) throws(WireError) {
        step = try reader.read(UInt64.self)
        stage = try reader.read(UInt32.self)
        error = try reader.readString()
        rawBytes = try reader.read(UInt64.self)
        storedBytes = try reader.read(UInt64.self)
        writeTime = try reader.readMilliseconds()
    }
}

/// A slot's account of one step.
public struct StepReport: WireCodable {
    public var step: UInt64
    /// Sum of the per-sample losses this slot computed (last stage only; 0 elsewhere).
    public var lossSum: Double
    public var samples: UInt32
    /// Checksum of the slot's layer state before this step's update (invariant 3).
    public var stateChecksum: UInt64
    /// Time spent computing and all-reducing, for throughput figures.
    public var computeTime: Duration
    /// Bytes of this step's gradient exchange: sent, received, and what an uncompressed float32
    /// ring would have sent (0 without data parallelism).
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    public var uncompressedBytes: UInt64

    public init(step: UInt64, lossSum: Double, samples: UInt32, stateChecksum: UInt64, computeTime: Duration, bytesSent: UInt64 = 0, bytesReceived: UInt64 = 0, uncompressedBytes: UInt64 = 0) {
        self.step = step
        self.lossSum = lossSum
        self.samples = samples
        self.stateChecksum = stateChecksum
        self.computeTime = computeTime
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.uncompressedBytes = uncompressedBytes
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(step)
        writer.write(lossSum)
        writer.write(samples)
        writer.write(stateChecksum)
        writer.write(UInt64(clamping: computeTime.milliseconds))
        writer.write(bytesSent)
        writer.write(bytesReceived)
        writer.write(uncompressedBytes)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        step = try reader.read(UInt64.self)
        lossSum = try reader.read(Double.self)
        guard lossSum.isFinite else { throw WireError(.invalidValue, "a loss must be finite") }
        samples = try reader.read(UInt32.self)
        stateChecksum = try reader.read(UInt64.self)
        computeTime = try reader.readMilliseconds()
        bytesSent = try reader.read(UInt64.self)
        bytesReceived = try reader.read(UInt64.self)
        uncompressedBytes = try reader.read(UInt64.self)
    }
}

/// Training progress for `elastic status`.
public struct TrainingStatus: WireCodable {
    public var job: String
    public var phase: String
    public var detail: String
    /// Steps committed so far, and in all.
    public var committedSteps: UInt64
    public var totalSteps: UInt64
    public var lastLoss: Double
    public var samplesPerSecond: Double
    /// `Plan.summary` of the current plan, or empty.
    public var plan: String
    /// The most recent ledger entries: step, epoch, next sample, loss.
    public var recent: [Entry]

    public struct Entry: WireCodable {
        public var step: UInt64
        public var epoch: UInt64
        public var nextSample: UInt64
        public var loss: Double
        public var replicasAgree: Bool

        public init(step: UInt64, epoch: UInt64, nextSample: UInt64, loss: Double, replicasAgree: Bool) {
            self.step = step
            self.epoch = epoch
            self.nextSample = nextSample
            self.loss = loss
            self.replicasAgree = replicasAgree
        }

        public func encode(to writer: inout WireWriter) {
            writer.write(step)
            writer.write(epoch)
            writer.write(nextSample)
            writer.write(loss)
            writer.write(replicasAgree)
        }

        public init(from reader: inout WireReader) throws(WireError) {
            step = try reader.read(UInt64.self)
            epoch = try reader.read(UInt64.self)
            nextSample = try reader.read(UInt64.self)
            loss = try reader.read(Double.self)
            replicasAgree = try reader.read(Bool.self)
        }
    }

    /// Each slot's gradient exchange in the last committed step.
    public var traffic: [Traffic]

    public struct Traffic: WireCodable {
        public var node: NodeID
        public var bytesSent: UInt64
        public var bytesReceived: UInt64
        public var uncompressedBytes: UInt64

        public init(node: NodeID, bytesSent: UInt64, bytesReceived: UInt64, uncompressedBytes: UInt64) {
            self.node = node
            self.bytesSent = bytesSent
            self.bytesReceived = bytesReceived
            self.uncompressedBytes = uncompressedBytes
        }

        /// Uncompressed over sent bytes (1 when nothing was sent).
        public var ratio: Double { bytesSent == 0 ? 1 : Double(uncompressedBytes) / Double(bytesSent) }

        public func encode(to writer: inout WireWriter) {
            writer.write(node.value)
            writer.write(bytesSent)
            writer.write(bytesReceived)
            writer.write(uncompressedBytes)
        }

        public init(from reader: inout WireReader) throws(WireError) {
            node = NodeID(try reader.readString(limit: 64))
            bytesSent = try reader.read(UInt64.self)
            bytesReceived = try reader.read(UInt64.self)
            uncompressedBytes = try reader.read(UInt64.self)
        }
    }

    /// The current plan as a grid (nil before the first plan): its generation, each stage's
    /// layers and the node in each replica's slot, and the spares.
    public var grid: Grid?

    public struct Grid: WireCodable {
        public struct Stage: WireCodable {
            /// Layers `firstLayer..<endLayer`.
            public var firstLayer: UInt32
            public var endLayer: UInt32
            /// `nodes[replica]`.
            public var nodes: [NodeID]

            public init(firstLayer: UInt32, endLayer: UInt32, nodes: [NodeID]) {
                self.firstLayer = firstLayer
                self.endLayer = endLayer
                self.nodes = nodes
            }

            public func encode(to writer: inout WireWriter) {
                writer.write(firstLayer)
                writer.write(endLayer)
                writer.write(count: nodes.count)
                for node in nodes { writer.write(node.value) }
            }

            public init(from reader: inout WireReader) throws(WireError) {
                firstLayer = try reader.read(UInt32.self)
                endLayer = try reader.read(UInt32.self)
                guard endLayer > firstLayer else { throw WireError(.invalidValue, "a stage's layer range \(firstLayer)..<\(endLayer) is empty") }
                let count = try reader.readCount(minimumItemSize: 4)
                var nodes: [NodeID] = []
                for _ in 0..<count { nodes.append(NodeID(try reader.readString(limit: 64))) }
                self.nodes = nodes
            }
        }

        public var generation: UInt64
        public var stages: [Stage]
        public var spares: [NodeID]

        public init(generation: UInt64, stages: [Stage], spares: [NodeID]) {
            self.generation = generation
            self.stages = stages
            self.spares = spares
        }

        /// The grid of `plan`.
        public init(_ plan: Plan) {
            generation = plan.generation.value
            stages = zip(plan.stages, plan.nodes).map { Stage(firstLayer: UInt32(clamping: $0.lowerBound), endLayer: UInt32(clamping: $0.upperBound), nodes: $1) }
            spares = plan.spares
        }

        public func encode(to writer: inout WireWriter) {
            writer.write(generation)
            writer.write(list: stages)
            writer.write(count: spares.count)
            for spare in spares { writer.write(spare.value) }
        }

        public init(from reader: inout WireReader) throws(WireError) {
            generation = try reader.read(UInt64.self)
            stages = try reader.readList(minimumItemSize: 12)
            let count = try reader.readCount(minimumItemSize: 4)
            var spares: [NodeID] = []
            for _ in 0..<count { spares.append(NodeID(try reader.readString(limit: 64))) }
            self.spares = spares
        }
    }

    /// Samples per step (the job's global batch), for an ETA from samples per second.
    public var batch: UInt32

    /// How checkpointing goes (nil when the job takes no checkpoints).
    public var checkpoints: CheckpointHealth?

    /// The newest valid checkpoint and the failures since, so that a full disk shows.
    public struct CheckpointHealth: WireCodable {
        /// The newest valid checkpoint's step (steps applied), and how long ago it was written.
        public var newestStep: UInt64?
        public var newestAgeMilliseconds: UInt64?
        /// Checkpoints that failed since the last one that worked, and in all.
        public var consecutiveFailures: UInt32
        public var failures: UInt32
        /// The last failure's step and reason.
        public var lastFailure: Failure?

        public struct Failure: WireCodable {
            public var step: UInt64
            public var reason: String

            public init(step: UInt64, reason: String) {
                self.step = step
                self.reason = reason
            }

            public func encode(to writer: inout WireWriter) {
                writer.write(step)
                writer.write(reason)
            }

            public init(from reader: inout WireReader) throws(WireError) {
                step = try reader.read(UInt64.self)
                reason = try reader.readString()
            }
        }

        public init(newestStep: UInt64?, newestAgeMilliseconds: UInt64?, consecutiveFailures: UInt32, failures: UInt32, lastFailure: Failure?) {
            self.newestStep = newestStep
            self.newestAgeMilliseconds = newestAgeMilliseconds
            self.consecutiveFailures = consecutiveFailures
            self.failures = failures
            self.lastFailure = lastFailure
        }

        public func encode(to writer: inout WireWriter) {
            writer.write(optional: newestStep)
            writer.write(optional: newestAgeMilliseconds)
            writer.write(consecutiveFailures)
            writer.write(failures)
            writer.write(lastFailure != nil)
            lastFailure?.encode(to: &writer)
        }

        public init(from reader: inout WireReader) throws(WireError) {
            newestStep = try reader.readOptional(UInt64.self)
            newestAgeMilliseconds = try reader.readOptional(UInt64.self)
            consecutiveFailures = try reader.read(UInt32.self)
            failures = try reader.read(UInt32.self)
            guard consecutiveFailures <= failures else {
                throw WireError(.invalidValue, "\(consecutiveFailures) checkpoint failures in a row, but only \(failures) in all")
            }
            lastFailure = try reader.read(Bool.self) ? try Failure(from: &reader) : nil
        }
    }

    public init(job: String, phase: String, detail: String, committedSteps: UInt64, totalSteps: UInt64, lastLoss: Double, samplesPerSecond: Double, plan: String, recent: [Entry], traffic: [Traffic] = [], grid: Grid? = nil, batch: UInt32 = 0, checkpoints: CheckpointHealth? = nil) {
        self.checkpoints = checkpoints
        self.traffic = traffic
        self.grid = grid
        self.batch = batch
        self.job = job
        self.phase = phase
        self.detail = detail
        self.committedSteps = committedSteps
        self.totalSteps = totalSteps
        self.lastLoss = lastLoss
        self.samplesPerSecond = samplesPerSecond
        self.plan = plan
        self.recent = recent
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(job)
        writer.write(phase)
        writer.write(detail)
        writer.write(committedSteps)
        writer.write(totalSteps)
        writer.write(lastLoss)
        writer.write(samplesPerSecond)
        writer.write(plan)
        writer.write(list: recent)
        writer.write(list: traffic)
        writer.write(grid != nil)
        grid?.encode(to: &writer)
        writer.write(batch)
        writer.write(checkpoints != nil)
        checkpoints?.encode(to: &writer)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        job = try reader.readString(limit: 256)
        phase = try reader.readString(limit: 32)
        detail = try reader.readString()
        committedSteps = try reader.read(UInt64.self)
        totalSteps = try reader.read(UInt64.self)
        lastLoss = try reader.read(Double.self)
        samplesPerSecond = try reader.read(Double.self)
        plan = try reader.readString(limit: 64 << 10)
        recent = try reader.readList(minimumItemSize: 33)
        traffic = try reader.readList(minimumItemSize: 28)
        grid = try reader.read(Bool.self) ? try Grid(from: &reader) : nil
        batch = try reader.read(UInt32.self)
        checkpoints = try reader.read(Bool.self) ? try CheckpointHealth(from: &reader) : nil
    }
}
