import ElasticCore
import ElasticNumerics
import ElasticStorage
import ElasticWire
import Foundation
import Logging

/// A worker's training shell: holds its stage's layers and the data set, follows the
/// controller's assignments, runs each step of its slot (GPipe: every micro-batch forward,
/// then every one backward), all-reduces gradients with the other replicas of its stage, and
/// applies the update only when the controller commits the step.
actor Trainer {
    private let dataPlane: DataPlane
    private let node: NodeID
    private let logger: Logger
    /// Sends a control message to the controller at a generation.
    private let report: @Sendable (ControlMessage, Generation) -> Void

    private var job: JobSpec?
    private var jobJSON: [UInt8] = []
    private var dataset: Dataset?
    private var plan: Plan?
    private var slot: Plan.Slot?
    private var stage: Stage?
    private var schedule: LearningRateSchedule = .constant(0)
    private var optimizer: ElasticNumerics.Optimizer = .w1
    private var totalSteps = 0
    /// The step whose gradients wait for the controller's commit.
    private var pendingStep: UInt64?
    /// The generation of the plan `pendingStep` was computed under.
    private var pendingGeneration: Generation?
    private var appliedSteps: UInt64 = 0
    /// The layers `stage` holds.
    private var heldLayers: Range<Int>?
    private var order: (epoch: Int, permutation: [Int32])?
    private var stepTask: Task<Void, Never>?
    private var assignTask: Task<Void, Never>?
    /// The checkpoint step whose part this worker is writing in the background, if any.
    private var checkpointWriting: UInt64?
    /// How gradients cross the replicas of the stage, and the codec state of the held layers
    /// after the last committed step; the state a computed step leads to waits for its commit.
    private var compression: GradientCompression = .none
    private var compressor: StageCompressor?
    private var pendingCompressor: StageCompressor?
    /// The gradient exchange of the last computed step.
    private var lastTraffic = ExchangeTraffic()
    private let metrics: WorkerMetrics?

    init(dataPlane: DataPlane, node: NodeID, logger: Logger, metrics: WorkerMetrics? = nil, report: @escaping @Sendable (ControlMessage, Generation) -> Void) {
        self.dataPlane = dataPlane
        self.node = node
        self.logger = logger
        self.metrics = metrics
        self.report = report
    }

    /// Lets peers copy this worker's state.
    func serveState() async {
        await dataPlane.setStateProvider { [weak self] stage, step in
            guard let self else { return .failure(DataPlaneError("the worker is stopping")) }
            return await self.state(of: stage, at: step)
        }
    }

    /// Routes one control message; returns false for messages that are not about training.
    func handle(_ message: ControlMessage, generation: Generation) async -> Bool {
        switch message {
        case .assign(let assignment):
            // A newer plan supersedes one still being set up (waiting for a dead peer's link,
            // say): the old one's waits fail as soon as the data plane is reconfigured.
            assignTask?.cancel()
            assignTask = Task { await self.assign(assignment) }
        case .startStep(let step):
            guard let plan, plan.generation == generation else {
                logger.warning("step \(step) of generation \(generation) ignored: this worker follows generation \(plan?.generation.description ?? "none")")
                return true
            }
            stepTask = Task { await self.runStep(step, plan: plan) }
        case .commit(let step):
            commit(step)
        case .checkpoint(let step):
            startCheckpoint(step, generation: generation)
        default:
            return false
        }
        return true
    }

    // MARK: - Assignment

    private func assign(_ assignment: Assignment) async {
        let plan = assignment.plan
        stepTask?.cancel()
        // The plan says the step this worker computed committed, but the commit never came (the
        // controller restarted after recording it): apply it now.
        if let pendingStep, pendingStep + 1 == assignment.nextStep, pendingGeneration == assignment.lastCommitGeneration, stage != nil {
            logger.info("step \(pendingStep) committed in generation \(assignment.lastCommitGeneration) before the controller restarted; applying it")
            commit(pendingStep)
        }
        // A step that did not commit is abandoned: its gradients were never applied, and its
        // codec state is dropped with it.
        pendingStep = nil
        pendingCompressor = nil
        do {
            try prepareJob(assignment.jobJSON)
            guard let job else { return }
            // Held state is good only at exactly the step the plan resumes from.
            if stage != nil, appliedSteps != assignment.nextStep {
                logger.warning("dropping the state of layers \(heldLayers.map { "\($0)" } ?? "?"): it is at step \(appliedSteps), the plan resumes at step \(assignment.nextStep)")
                stage = nil
                heldLayers = nil
            }
            let slot = plan.slot(of: node)
            let incoming = assignment.transfers.first { $0.to == node }
            let peers = slot.map { self.peers(of: $0, in: plan) } ?? []
            // Links for state copies only: their end must not fail this generation's steps.
            var copyPeers: Set<NodeID> = []
            if let incoming { copyPeers.insert(incoming.from) }
            for transfer in assignment.transfers where transfer.from == node { copyPeers.insert(transfer.to) }
            self.plan = plan
            self.slot = slot
            metrics?.assigned(generation: plan.generation, stage: slot?.stage)
            guard let slot else {
                let handoffs = assignment.transfers.filter { $0.from == node }.map { "stage \($0.stage) to \($0.to)" }
                logger.info("generation \(plan.generation): spare (plan \(plan.summary))\(handoffs.isEmpty ? "" : "; handing off " + handoffs.joined(separator: ", "))")
                try await dataPlane.configure(generation: plan.generation, peers: peers, transient: copyPeers, addresses: assignment.dataAddresses)
                return
            }
            let layers = plan.stages[slot.stage]
            logger.info("generation \(plan.generation): stage \(slot.stage) (layers \(layers.lowerBound)-\(layers.upperBound - 1)) replica \(slot.replica) of \(plan.summary), from step \(assignment.nextStep)")
            try await dataPlane.configure(generation: plan.generation, peers: peers, transient: copyPeers, addresses: assignment.dataAddresses)
            if let incoming {
                let started = ContinuousClock.now
                try await dataPlane.send(.stateRequest(stage: UInt32(incoming.stage), step: assignment.nextStep), to: incoming.from, generation: plan.generation)
                let blobs = try await dataPlane.states.take(UInt32(incoming.stage))
                let received = try blobs.map(LayerStateCodec.decode)
                guard received.map(\.layer.spec) == Array(job.modelSpec.layers[layers]) else {
                    throw ElasticError("the state \(incoming.from) sent does not have the layers \(layers) of this job")
                }
                stage = Stage(layers: received.map(\.layer))
                heldLayers = layers
                appliedSteps = assignment.nextStep
                // The codec state moves with the layers, but a residual is the sender's own.
                try resetCompressor(job: job, layers: layers, importing: received.map(\.extras), keepResiduals: false)
                let bytes = blobs.reduce(0) { $0 + $1.count }
                let took = ContinuousClock.now - started
                metrics?.stateCopied(bytes: bytes, took: took)
                logger.info("copied layers \(layers.lowerBound)-\(layers.upperBound - 1) (\(bytes >> 10) KiB) from \(incoming.from) in \(took.shortDescription), \(megabytesPerSecond(bytes: bytes, seconds: took.inSeconds))")
            } else if stage == nil || heldLayers != layers {
                if !assignment.restore.isEmpty {
                    try restore(layers, from: assignment.restore, step: assignment.nextStep, job: job, keepResiduals: slot.replica == 0)
                } else {
                    guard assignment.nextStep == 0 else {
                        throw ElasticError("this worker holds no state of layers \(layers) at step \(assignment.nextStep) and the plan names no source")
                    }
                    stage = job.initialStage(layers)
                    heldLayers = layers
                    appliedSteps = 0
                    try resetCompressor(job: job, layers: layers, importing: nil, keepResiduals: false)
                }
            }
            guard self.plan?.generation == plan.generation, !Task.isCancelled else { return }
            report(.ready, plan.generation)
        } catch let error as DataPlaneError {
            // A peer is unreachable or the plan was superseded: ask for the plan again under a
            // new generation (the controller re-plans once the peer is declared dead).
            guard self.plan?.generation == plan.generation, !Task.isCancelled else { return }
            logger.warning("cannot set up generation \(plan.generation): \(error)")
            report(.stepAbandoned(step: assignment.nextStep, reason: "\(error)"), plan.generation)
        } catch {
            guard self.plan?.generation == plan.generation, !Task.isCancelled else { return }
            logger.error("cannot take part in generation \(plan.generation): \(error)")
            report(.trainingFailed(reason: "\(error)"), plan.generation)
        }
    }

    /// Loads `layers` from the checkpoint directory `path` (every blob verified), written after
    /// exactly `step` steps.
    private func restore(_ layers: Range<Int>, from path: String, step: UInt64, job: JobSpec, keepResiduals: Bool) throws {
        let started = ContinuousClock.now
        let loaded = try CheckpointReader.load(directory: path, layers: Set(layers), progress: Checkpoints.restoreProgress(path, layers: layers, logger: logger))
        guard loaded.manifest.step == Int(step) else {
            throw ElasticError("checkpoint \(path) holds step \(loaded.manifest.step), the plan resumes at step \(step)")
        }
        let ordered = loaded.layers.sorted { $0.index < $1.index }
        guard ordered.map(\.index) == Array(layers), ordered.map(\.state.spec) == Array(job.modelSpec.layers[layers]) else {
            throw ElasticError("checkpoint \(path) does not hold layers \(layers.lowerBound)-\(layers.upperBound - 1) of this job's model")
        }
        stage = Stage(layers: try ordered.map { try Layer(state: $0.state) })
        heldLayers = layers
        appliedSteps = step
        // The writer's residuals go to one replica (the first); the others start from zero.
        try resetCompressor(job: job, layers: layers, importing: ordered.map(\.extras), keepResiduals: keepResiduals)
        let bytes = ordered.reduce(0) { $0 + $1.state.tensors.reduce(0) { $0 + $1.values.count * 4 } }
        let took = ContinuousClock.now - started
        logger.info("restored layers \(layers.lowerBound)-\(layers.upperBound - 1) (\(bytes >> 10) KiB) from checkpoint \(path) (step \(step)) in \(took.shortDescription), \(megabytesPerSecond(bytes: bytes, seconds: took.inSeconds))")
    }

    /// A fresh codec state for `layers`, with `importing` (per layer) restored into it.
    private func resetCompressor(job: JobSpec, layers: Range<Int>, importing: [[NamedTensor]]?, keepResiduals: Bool) throws {
        let momentum: Float = if case .sgd(let sgd) = optimizer { sgd.momentum } else { 0 }
        var fresh = StageCompressor(specs: Array(job.modelSpec.layers[layers]), firstLayer: layers.lowerBound, compression: compression, jobSeed: job.seed, momentum: momentum)
        if let importing, importing.contains(where: { !$0.isEmpty }) {
            do {
                try fresh.importState(importing, keepResiduals: keepResiduals)
            } catch {
                // State of another codec (a job resumed with a new compression setting): start over.
                logger.warning("the codec state that came with layers \(layers.lowerBound)-\(layers.upperBound - 1) does not fit \(compression.codec.name): \(error); starting it afresh")
            }
        }
        compressor = fresh
        pendingCompressor = nil
    }

    // MARK: - Checkpoints

    /// The controller asks for this stage's part of the checkpoint at `step` (steps applied):
    /// the layers are snapshotted now (the arrays are shared until the next update writes them)
    /// and written in the background; the step loop is not held up.
    private func startCheckpoint(_ step: UInt64, generation: Generation) {
        let stageIndex = UInt32(clamping: slot?.stage ?? 0)
        func refuse(_ reason: String) {
            self.logger.warning("checkpoint of step \(step) not written: \(reason)")
            self.report(.checkpointWritten(CheckpointWritten(step: step, stage: stageIndex, error: reason)), generation)
        }
        guard let job, let stage, let heldLayers, slot != nil else { return refuse("this worker holds no stage") }
        guard appliedSteps == step else { return refuse("this worker's state is at step \(appliedSteps), not \(step)") }
        guard let settings = job.checkpoint, let directory = settings.directory else { return refuse("the job has no checkpoint directory") }
        if let writing = checkpointWriting { return refuse("the checkpoint of step \(writing) is still being written") }
        let codecState = compressor?.exportState()
        let snapshot = stage.layers.enumerated().map {
            LayerCheckpoint(index: heldLayers.lowerBound + $0.offset, state: $0.element.state, extras: codecState?[$0.offset] ?? [])
        }
        let options = CheckpointWriteOptions(
            level: Int32(settings.level ?? Int(CheckpointWriteOptions.defaultLevel)),
            shuffle: settings.shuffle.flatMap(CheckpointWriteOptions.ShufflePolicy.init(rawValue:)) ?? .auto,
            compressionThreads: settings.threads ?? 0)
        checkpointWriting = step
        let (logger, report, metrics) = (self.logger, self.report, self.metrics)
        // A thread of its own at the lowest priority: compression and fsyncs take only the
        // cycles training leaves, and never a thread of the cooperative pool the steps run on.
        let thread = Thread { [weak self] in
            LowPriority.enter()
            let started = ContinuousClock.now
            var message = CheckpointWritten(step: step, stage: stageIndex)
            do {
                let part = try CheckpointStore(root: directory).writeLayers(step: Int(step), part: "stage-\(stageIndex)", layers: snapshot, options: options)
                message.rawBytes = UInt64(part.rawBytes)
                message.storedBytes = UInt64(part.storedBytes)
                message.writeTime = ContinuousClock.now - started
                metrics?.checkpointWritten(rawBytes: message.rawBytes, storedBytes: message.storedBytes, took: message.writeTime)
                logger.info("checkpoint of step \(step): wrote layers \(snapshot.first?.index ?? 0)-\(snapshot.last?.index ?? 0) (\(part.rawBytes >> 10) KiB → \(part.storedBytes >> 10) KiB) in \(message.writeTime.shortDescription)")
            } catch {
                message.error = "\(error)"
                logger.error("checkpoint of step \(step) failed: \(error)")
            }
            let done = message
            Task {
                await self?.checkpointDone(step)
                report(.checkpointWritten(done), generation)
            }
        }
        thread.name = "checkpoint-\(step)"
        thread.start()
    }

    private func checkpointDone(_ step: UInt64) {
        if checkpointWriting == step { checkpointWriting = nil }
    }

    /// Waits (at most `deadline`) until no checkpoint part is being written: a worker that
    /// leaves finishes its part first, so the checkpoint of the last step is not lost.
    func finishCheckpointWrite(within deadline: Duration) async {
        let end = ContinuousClock.now + deadline
        guard let step = checkpointWriting else { return }
        logger.info("finishing the checkpoint of step \(step) before leaving")
        while checkpointWriting != nil, ContinuousClock.now < end {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// A peer's request for the state of `stage` at `step`: only a holder whose state is at
    /// exactly that step answers.
    func state(of stageIndex: UInt32, at step: UInt64) -> Result<[[UInt8]], DataPlaneError> {
        // A spare or a leaving member may still hold its former stage: the layers decide.
        guard let stage, let plan, Int(stageIndex) < plan.stageCount, heldLayers == plan.stages[Int(stageIndex)], appliedSteps == step else {
            return .failure(DataPlaneError("this worker does not hold stage \(stageIndex) at step \(step) (it holds \(heldLayers.map { "layers \($0.lowerBound)-\($0.upperBound - 1)" } ?? "nothing") at step \(appliedSteps))"))
        }
        let codecState = compressor?.exportState()
        let blobs = stage.layers.enumerated().map { LayerStateCodec.encode($0.element.state, extras: codecState?[$0.offset] ?? []) }
        metrics?.stateServed(bytes: blobs.reduce(0) { $0 + $1.count })
        return .success(blobs)
    }

    private func prepareJob(_ json: [UInt8]) throws {
        if job != nil && json == jobJSON { return }
        let spec = try JSONDecoder().decode(JobSpec.self, from: Data(json))
        if let problem = spec.problem() { throw ElasticError("job: \(problem)") }
        let dataset: Dataset
        do {
            dataset = try Dataset.open(spec.data.path)
        } catch {
            throw ElasticError("data set \(spec.data.path): \(error)")
        }
        if let problem = AcceptedJob.datasetMismatch(spec: spec, features: dataset.featureCount, classes: dataset.classes, samples: dataset.sampleCount) {
            throw ElasticError("data set \(spec.data.path): \(problem)")
        }
        compression = try spec.compression.map { try GradientCompression(spec: $0) } ?? .none
        job = spec
        jobJSON = json
        self.dataset = dataset
        totalSteps = spec.totalSteps(samples: dataset.sampleCount)
        schedule = spec.learningRateSchedule(totalSteps: totalSteps)
        optimizer = spec.numericOptimizer
        stage = nil
        heldLayers = nil
        order = nil
    }

    /// The neighbours this slot exchanges data with.
    private func peers(of slot: Plan.Slot, in plan: Plan) -> Set<NodeID> {
        var peers: Set<NodeID> = []
        if slot.stage > 0 { peers.insert(plan.node(at: .init(stage: slot.stage - 1, replica: slot.replica))) }
        if slot.stage < plan.stageCount - 1 { peers.insert(plan.node(at: .init(stage: slot.stage + 1, replica: slot.replica))) }
        if plan.replicas > 1 {
            peers.insert(plan.node(at: .init(stage: slot.stage, replica: (slot.replica + 1) % plan.replicas)))
            peers.insert(plan.node(at: .init(stage: slot.stage, replica: (slot.replica + plan.replicas - 1) % plan.replicas)))
        }
        return peers
    }

    // MARK: - Steps

    private func runStep(_ step: UInt64, plan: Plan) async {
        let started = ContinuousClock.now
        do {
            let (lossSum, samples) = try await compute(step: step, plan: plan)
            guard self.plan?.generation == plan.generation, let stage else { return }
            // The checksum is of the state every replica must agree on: before this step's update.
            let checksum = stage.checksums().reduce(into: FNV1a64()) { $0.combine($1) }.value
            pendingStep = step
            pendingGeneration = plan.generation
            report(.stepDone(StepReport(
                step: step, lossSum: lossSum, samples: UInt32(samples), stateChecksum: checksum,
                computeTime: ContinuousClock.now - started, bytesSent: UInt64(lastTraffic.sent),
                bytesReceived: UInt64(lastTraffic.received), uncompressedBytes: UInt64(lastTraffic.uncompressedSent))), plan.generation)
            metrics?.stepComputed(took: ContinuousClock.now - started, sent: lastTraffic.sent, received: lastTraffic.received, uncompressed: lastTraffic.uncompressedSent)
        } catch let error as DataPlaneError {
            // A peer is gone or the generation ended: the controller re-plans and this step is
            // redone; nothing was applied. Tell it, in case the peer is still a member.
            logger.warning("step \(step) abandoned: \(error)")
            if self.plan?.generation == plan.generation {
                report(.stepAbandoned(step: step, reason: "\(error)"), plan.generation)
            }
        } catch {
            guard self.plan?.generation == plan.generation, !Task.isCancelled else { return }
            logger.error("step \(step) failed: \(error)")
            report(.trainingFailed(reason: "step \(step): \(error)"), plan.generation)
        }
    }

    /// Forward and backward of every micro-batch of this slot's share of the global batch, then
    /// the all-reduce. Returns the summed loss (last stage) and the samples computed.
    private func compute(step: UInt64, plan: Plan) async throws -> (Double, Int) {
        guard let job, let dataset, let slot, var stage else { throw ElasticError("no job assigned") }
        guard step == appliedSteps else {
            throw ElasticError("asked to run step \(step), but this worker's state is after step \(Int(appliedSteps) - 1)")
        }
        let perEpoch = job.stepsPerEpoch(samples: dataset.sampleCount)
        let epoch = Int(step) / perEpoch
        if order?.epoch != epoch {
            order = (epoch, DataOrder.permutation(seed: job.seed, epoch: UInt64(epoch), count: dataset.sampleCount))
        }
        let permutation = order!.permutation
        let stepPositions = DataOrder.stepRange(step: Int(step) % perEpoch, batch: job.batch)
        let share = EvenSplit.range(slot.replica, of: plan.replicas, count: job.batch)
        let micro = EvenSplit.ranges(parts: job.microBatches, count: share.count)
        let first = slot.stage == 0
        let last = slot.stage == plan.stageCount - 1
        let next = last ? nil : plan.node(at: .init(stage: slot.stage + 1, replica: slot.replica))
        let previous = first ? nil : plan.node(at: .init(stage: slot.stage - 1, replica: slot.replica))

        stage.zeroGrad()
        var caches: [Int: StageCache] = [:]
        var lossGradients: [Int: Matrix] = [:]
        var lossSum = 0.0
        for (index, range) in micro.enumerated() where !range.isEmpty {
            let positions = (stepPositions.lowerBound + share.lowerBound + range.lowerBound)..<(stepPositions.lowerBound + share.lowerBound + range.upperBound)
            // Stage 0 needs the features, the last stage the labels: read the samples once.
            let samples = first || last ? try dataset.gather(order: permutation, positions: positions) : nil
            let input: Matrix
            if let samples, first {
                input = Matrix(rows: positions.count, cols: samples.featureCount, values: samples.features)
            } else {
                let tensor = try await dataPlane.activations.take(TensorKey(generation: plan.generation, step: step, microBatch: UInt32(index)))
                input = try Matrix.validated(rows: Int(tensor.rows), cols: Int(tensor.columns), values: tensor.values)
                guard input.rows == range.count else {
                    throw ElasticError("micro-batch \(index) of step \(step) arrived with \(input.rows) rows, expected \(range.count)")
                }
            }
            try stage.checkInput(input)
            let (output, cache) = stage.forward(input)
            caches[index] = cache
            if let next {
                try await dataPlane.send(.activation(.init(step: step, microBatch: UInt32(index), rows: UInt32(output.rows), columns: UInt32(output.cols), values: output.values)), to: next, generation: plan.generation)
            } else if let samples {
                let result = try SoftmaxCrossEntropy.evaluate(logits: output, labels: samples.labels, normalizer: job.batch)
                lossSum += result.lossSum
                lossGradients[index] = result.dLogits
            }
        }
        for (index, range) in micro.enumerated().reversed() where !range.isEmpty {
            let gradient: Matrix
            if last {
                gradient = lossGradients[index]!
            } else {
                let tensor = try await dataPlane.gradients.take(TensorKey(generation: plan.generation, step: step, microBatch: UInt32(index)))
                gradient = try Matrix.validated(rows: Int(tensor.rows), cols: Int(tensor.columns), values: tensor.values)
            }
            try stage.checkOutputGradient(gradient, cache: caches[index]!)
            if let previous {
                let dInput = stage.backward(gradient, cache: caches[index]!)
                try await dataPlane.send(.gradient(.init(step: step, microBatch: UInt32(index), rows: UInt32(dInput.rows), columns: UInt32(dInput.cols), values: dInput.values)), to: previous, generation: plan.generation)
            } else {
                stage.accumulateGradients(gradient, cache: caches[index]!)
            }
            caches[index] = nil
        }
        var traffic = ExchangeTraffic()
        var nextCompressor = compressor
        if plan.replicas > 1 {
            var gradients = stage.flatGradients()
            let next = plan.node(at: .init(stage: slot.stage, replica: (slot.replica + 1) % plan.replicas))
            if var codec = nextCompressor, codec.compresses {
                let link = DataPlaneExchangeLink(plane: dataPlane, next: next, step: step, generation: plan.generation)
                traffic = try await codec.sync(&gradients, step: Int(step), rank: slot.replica, size: plan.replicas, link: link)
                nextCompressor = codec
                // Top-k with momentum correction sent velocities: cancel the optimizer's own
                // momentum for those tensors (the velocity slots agree on every replica).
                for item in codec.momentumCorrected(step: Int(step)) {
                    guard let velocity = stage.layers[item.layer].optimizerState.slots.first(where: { $0.name == "\(item.tensor).velocity" })?.values,
                          velocity.count == item.range.count else { continue }
                    gradients.withUnsafeMutableBufferPointer { flat in
                        for (offset, index) in item.range.enumerated() { flat[index] -= item.momentum * velocity[offset] }
                    }
                }
            } else {
                // The ring checks every chunk's size, so peers with another model cannot corrupt this buffer.
                let ring = DataPlaneRingLink(plane: dataPlane, next: next, step: step, generation: plan.generation)
                try await RingAllReduce.run(&gradients, rank: slot.replica, size: plan.replicas, link: ring)
                let bytes = GradientTraffic.ringBytesPerReplica(count: gradients.count, codec: .float32, replicas: plan.replicas)
                traffic = ExchangeTraffic(sent: bytes, received: bytes, uncompressedSent: bytes)
            }
            stage.loadFlatGradients(gradients)
        }
        // A new plan may have arrived meanwhile: its state wins.
        guard self.plan?.generation == plan.generation else { throw DataPlaneError("generation \(plan.generation) ended during step \(step)") }
        self.stage = stage
        pendingCompressor = nextCompressor
        lastTraffic = traffic
        return (lossSum, share.count)
    }

    /// The controller committed `step`: apply its update (exactly once).
    private func commit(_ step: UInt64) {
        guard pendingStep == step, var stage else {
            logger.warning("commit of step \(step) without its gradients (pending: \(pendingStep.map(String.init) ?? "none")); ignored")
            return
        }
        stage.applyOptimizer(optimizer, learningRate: schedule.learningRate(at: Int(step)))
        self.stage = stage
        if let pendingCompressor { compressor = pendingCompressor }
        pendingCompressor = nil
        pendingStep = nil
        appliedSteps = step + 1
        metrics?.applied(steps: appliedSteps)
    }

    func stop() {
        stepTask?.cancel()
        assignTask?.cancel()
    }
}

/// Lowers the calling thread to the lowest scheduling priority (nice 19), so background work
/// such as checkpoint compression yields to training.
enum LowPriority {
    static func enter() {
        #if os(Linux)
        // On Linux a nice value is per thread: PRIO_PROCESS with the thread's id, which
        // /proc/thread-self names ("<pid>/task/<tid>"; glibc's gettid is not exposed to Swift).
        var buffer = [CChar](repeating: 0, count: 64)
        let length = readlink("/proc/thread-self", &buffer, buffer.count - 1)
        guard length > 0, let tid = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: "/").last.flatMap({ id_t($0) }) else { return }
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), tid, 19)
        #endif
    }
}
