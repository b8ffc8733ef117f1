/// A training job, as written in a job file (JSON; see docs/job-spec.md). Decoding is the
/// shell's; `validate()` is pure and names the field that is wrong.
public struct JobSpec: Codable, Sendable, Equatable {
    public struct Model: Codable, Sendable, Equatable {
        /// Width of the input features.
        public var inputs: Int
        /// Placement layers, in order: Linear(previous width → outputs) then the activation.
        public var layers: [Layer]
        /// `w1` (docs/w1.md's rule: stream seed+2, uniform (2u−1)/√fanIn).
        public var initialization: String?

        public init(inputs: Int, layers: [Layer], initialization: String? = nil) {
            self.inputs = inputs
            self.layers = layers
            self.initialization = initialization
        }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var outputs: Int
        /// `relu`, `gelu` or `none`.
        public var activation: String

        public init(outputs: Int, activation: String) {
            self.outputs = outputs
            self.activation = activation
        }
    }

    public struct Data: Codable, Sendable, Equatable {
        /// The data set directory (as made by `elastic data generate` or `import`), resolved
        /// on each worker.
        public var path: String

        public init(path: String) { self.path = path }
    }

    public struct Optimizer: Codable, Sendable, Equatable {
        /// `sgd` (with momentum) or `adam`.
        public var kind: String
        public var learningRate: Double
        public var momentum: Double?
        public var beta1: Double?
        public var beta2: Double?
        public var epsilon: Double?
        public var weightDecay: Double?

        public init(kind: String, learningRate: Double, momentum: Double? = nil, beta1: Double? = nil, beta2: Double? = nil, epsilon: Double? = nil, weightDecay: Double? = nil) {
            self.kind = kind
            self.learningRate = learningRate
            self.momentum = momentum
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.weightDecay = weightDecay
        }
    }

    public struct Schedule: Codable, Sendable, Equatable {
        /// `constant`, `cosine` (linear warm-up, then cosine decay to `minimumFactor`·lr) or
        /// `step` (× `factor` every `every` steps).
        public var kind: String
        public var warmupSteps: Int?
        public var minimumFactor: Double?
        public var every: Int?
        public var factor: Double?

        public init(kind: String, warmupSteps: Int? = nil, minimumFactor: Double? = nil, every: Int? = nil, factor: Double? = nil) {
            self.kind = kind
            self.warmupSteps = warmupSteps
            self.minimumFactor = minimumFactor
            self.every = every
            self.factor = factor
        }
    }

    /// A fixed plan; without it the controller chooses.
    public struct PlanRequest: Codable, Sendable, Equatable {
        public var stages: Int
        public var replicas: Int

        public init(stages: Int, replicas: Int) {
            self.stages = stages
            self.replicas = replicas
        }
    }

    /// Checkpoints (docs/checkpoint-format.md): every `every` committed steps and at the end.
    public struct Checkpoint: Codable, Sendable, Equatable {
        /// Steps between checkpoints; without it, only the end of the job is checkpointed.
        public var every: Int?
        /// Checkpoints to keep (default 3).
        public var keep: Int?
        /// The checkpoint root, relative to the job file (default `checkpoints`); every worker
        /// that writes must see it at the same path (a shared volume).
        public var directory: String?
        /// zstd level (default 1: see docs/checkpoint-format.md for the measurements).
        public var level: Int?
        /// Byte-plane shuffle of float tensors: `auto` (default), `always` or `never`.
        public var shuffle: String?
        /// zstd worker threads per writer (0, the default: compress on the writing thread).
        public var threads: Int?
        /// Start from a checkpoint: `latest` (the newest valid one in `directory`) or a step
        /// directory's path.
        public var resume: String?

        public init(every: Int? = nil, keep: Int? = nil, directory: String? = nil, level: Int? = nil, shuffle: String? = nil, threads: Int? = nil, resume: String? = nil) {
            self.every = every
            self.keep = keep
            self.directory = directory
            self.level = level
            self.shuffle = shuffle
            self.threads = threads
            self.resume = resume
        }

        public static let defaultKeep = 3
        public static let defaultDirectory = "checkpoints"
    }

    /// How gradients cross the data-parallel group (docs/compression.md): a codec name and the
    /// fields it takes. `{"codec": "topk", "fraction": 0.01}` (values cross as bf16;
    /// `"values": "float32"` for full precision), `{"codec": "powersgd", "rank": 4,
    /// "warmupSteps": 10}`, `{"codec": "int8", "chunk": 512}`, `{"codec": "bf16"}`.
    public struct Compression: Codable, Sendable, Equatable {
        public static let codecNames = ["none", "fp16", "bf16", "int8", "topk", "powersgd"]

        /// none, fp16, bf16, int8, topk or powersgd.
        public var codec: String
        /// int8 only: elements per scale (default 512).
        public var chunk: Int?
        /// topk only, required: the fraction of elements sent, in (0, 1].
        public var fraction: Double?
        /// topk only: how the sent values cross, `bf16` (the default; the rounding error stays
        /// in the residual and is sent later) or `float32`.
        public var values: String?
        /// powersgd only, required: the rank r, 1 to 1024.
        public var rank: Int?
        /// powersgd and topk: steps at the start of the job that cross uncompressed (default 0);
        /// for topk with `warmupFraction`, the steps over which the fraction falls to `fraction`.
        public var warmupSteps: Int?
        /// topk only: the fraction of the first step, falling exponentially to `fraction` over
        /// `warmupSteps` (DGC's warm-up), in [fraction, 1]. Without it warm-up is uncompressed.
        public var warmupFraction: Double?
        /// Tensors with fewer elements cross uncompressed (default 4096; 0 compresses all).
        public var minimumElements: Int?

        public init(codec: String, chunk: Int? = nil, fraction: Double? = nil, values: String? = nil, rank: Int? = nil,
                    warmupSteps: Int? = nil, warmupFraction: Double? = nil, minimumElements: Int? = nil) {
            self.codec = codec
            self.chunk = chunk
            self.fraction = fraction
            self.values = values
            self.rank = rank
            self.warmupSteps = warmupSteps
            self.warmupFraction = warmupFraction
            self.minimumElements = minimumElements
        }

        /// Why the settings cannot run, naming the field as `compression.<field>`; nil when valid.
        public func problem() -> String? {
            guard Self.codecNames.contains(codec) else {
                return "compression.codec: '\(codec)' is not one of \(Self.codecNames.joined(separator: ", "))"
            }
            // A field another codec takes is a mistake worth naming, not something to ignore.
            let owners: [(field: String, present: Bool, codec: String)] = [
                ("chunk", chunk != nil, "int8"), ("fraction", fraction != nil, "topk"), ("values", values != nil, "topk"),
                ("rank", rank != nil, "powersgd"), ("warmupFraction", warmupFraction != nil, "topk"),
            ]
            for owner in owners where owner.present && owner.codec != codec {
                return "compression.\(owner.field): only the \(owner.codec) codec takes it (codec is \(codec))"
            }
            if warmupSteps != nil, codec != "powersgd", codec != "topk" {
                return "compression.warmupSteps: only the powersgd and topk codecs take it (codec is \(codec))"
            }
            if let chunk, !(1...(1 << 24)).contains(chunk) {
                return "compression.chunk: must be between 1 and \(1 << 24) elements per scale (got \(chunk))"
            }
            if codec == "topk" {
                guard let fraction else { return "compression.fraction: topk needs the fraction of elements to send, e.g. 0.01" }
                guard fraction.isFinite, fraction > 0, fraction <= 1 else {
                    return "compression.fraction: must be in (0, 1] (got \(fraction))"
                }
                if let values, !["bf16", "float32"].contains(values) {
                    return "compression.values: must be bf16 or float32 (got '\(values)')"
                }
                if let warmupFraction {
                    guard warmupFraction.isFinite, warmupFraction >= fraction, warmupFraction <= 1 else {
                        return "compression.warmupFraction: must be in [fraction, 1] (got \(warmupFraction))"
                    }
                    guard (warmupSteps ?? 0) > 0 else {
                        return "compression.warmupFraction: needs warmupSteps, the steps over which the fraction falls to \(fraction)"
                    }
                }
            }
            if codec == "powersgd" {
                guard let rank else { return "compression.rank: powersgd needs a rank, e.g. 4" }
                guard (1...1024).contains(rank) else { return "compression.rank: must be between 1 and 1024 (got \(rank))" }
            }
            if let warmupSteps, warmupSteps < 0 {
                return "compression.warmupSteps: must not be negative (got \(warmupSteps))"
            }
            if let minimumElements, minimumElements < 0 {
                return "compression.minimumElements: must not be negative (got \(minimumElements))"
            }
            return nil
        }
    }

    public var name: String
    public var model: Model
    public var data: Data
    /// Global batch B: fixed whatever the number of workers (invariant 4).
    public var batch: Int
    /// Micro-batches per replica.
    public var microBatches: Int
    public var optimizer: Optimizer
    public var schedule: Schedule?
    /// Train this many steps (or `epochs` whole epochs; one of the two).
    public var steps: Int?
    public var epochs: Int?
    public var seed: UInt64
    public var plan: PlanRequest?
    public var checkpoint: Checkpoint?
    public var compression: Compression?

    public init(name: String, model: Model, data: Data, batch: Int, microBatches: Int, optimizer: Optimizer, schedule: Schedule? = nil, steps: Int? = nil, epochs: Int? = nil, seed: UInt64, plan: PlanRequest? = nil, checkpoint: Checkpoint? = nil, compression: Compression? = nil) {
        self.name = name
        self.model = model
        self.data = data
        self.batch = batch
        self.microBatches = microBatches
        self.optimizer = optimizer
        self.schedule = schedule
        self.steps = steps
        self.epochs = epochs
        self.seed = seed
        self.plan = plan
        self.checkpoint = checkpoint
        self.compression = compression
    }

    /// Why the job cannot run, naming the field; nil when it is valid.
    public func problem() -> String? {
        if name.isEmpty { return "name: must not be empty" }
        if model.inputs < 1 { return "model.inputs: must be at least 1 (got \(model.inputs))" }
        if model.layers.isEmpty { return "model.layers: a model needs at least one layer" }
        for (index, layer) in model.layers.enumerated() {
            if layer.outputs < 1 { return "model.layers[\(index)].outputs: must be at least 1 (got \(layer.outputs))" }
            if !["relu", "gelu", "none"].contains(layer.activation) {
                return "model.layers[\(index)].activation: '\(layer.activation)' is not one of relu, gelu, none"
            }
        }
        if model.layers.last?.outputs ?? 0 < 2 { return "model.layers: the last layer produces the class scores and needs at least 2 outputs" }
        if let initialization = model.initialization, initialization != "w1" {
            return "model.initialization: '\(initialization)' is not known (use w1 or leave it out)"
        }
        if data.path.isEmpty { return "data.path: must name a data set directory" }
        if batch < 1 { return "batch: must be at least 1 (got \(batch))" }
        if microBatches < 1 { return "microBatches: must be at least 1 (got \(microBatches))" }
        switch optimizer.kind {
        case "sgd":
            if let momentum = optimizer.momentum, !(0..<1).contains(momentum) { return "optimizer.momentum: must be in [0, 1) (got \(momentum))" }
        case "adam":
            if let beta1 = optimizer.beta1, !(0..<1).contains(beta1) { return "optimizer.beta1: must be in [0, 1)" }
            if let beta2 = optimizer.beta2, !(0..<1).contains(beta2) { return "optimizer.beta2: must be in [0, 1)" }
            if let epsilon = optimizer.epsilon, !(epsilon > 0) { return "optimizer.epsilon: must be positive" }
        default:
            return "optimizer.kind: '\(optimizer.kind)' is not one of sgd, adam"
        }
        if !(optimizer.learningRate > 0) || !optimizer.learningRate.isFinite { return "optimizer.learningRate: must be a positive number" }
        if let decay = optimizer.weightDecay, !(decay >= 0) { return "optimizer.weightDecay: must not be negative" }
        if let schedule {
            switch schedule.kind {
            case "constant": break
            case "cosine":
                if let warmup = schedule.warmupSteps, warmup < 0 { return "schedule.warmupSteps: must not be negative" }
                if let minimum = schedule.minimumFactor, !(0...1).contains(minimum) { return "schedule.minimumFactor: must be in [0, 1]" }
            case "step":
                guard let every = schedule.every, every >= 1 else { return "schedule.every: a step schedule needs every ≥ 1" }
                guard let factor = schedule.factor, factor > 0 else { return "schedule.factor: a step schedule needs a positive factor" }
            default:
                return "schedule.kind: '\(schedule.kind)' is not one of constant, cosine, step"
            }
        }
        switch (steps, epochs) {
        case (nil, nil): return "steps: give steps or epochs"
        case (.some, .some): return "steps: give steps or epochs, not both"
        case (let steps?, nil) where steps < 1: return "steps: must be at least 1"
        case (nil, let epochs?) where epochs < 1: return "epochs: must be at least 1"
        default: break
        }
        if let plan {
            if plan.stages < 1 || plan.stages > model.layers.count {
                return "plan.stages: must be between 1 and the number of layers (\(model.layers.count))"
            }
            if plan.replicas < 1 { return "plan.replicas: must be at least 1" }
            if plan.replicas > batch { return "plan.replicas: \(plan.replicas) replicas cannot share a batch of \(batch)" }
        }
        if let checkpoint {
            if let every = checkpoint.every, every < 1 { return "checkpoint.every: must be at least 1" }
            if let keep = checkpoint.keep, keep < 1 { return "checkpoint.keep: must be at least 1" }
            if let directory = checkpoint.directory, directory.isEmpty { return "checkpoint.directory: must not be empty" }
            if let level = checkpoint.level, !(-7...22).contains(level) { return "checkpoint.level: zstd levels run from -7 to 22 (got \(level))" }
            if let shuffle = checkpoint.shuffle, !["auto", "always", "never"].contains(shuffle) {
                return "checkpoint.shuffle: '\(shuffle)' is not one of auto, always, never"
            }
            if let threads = checkpoint.threads, !(0...64).contains(threads) { return "checkpoint.threads: must be between 0 and 64" }
            if let resume = checkpoint.resume, resume.isEmpty { return "checkpoint.resume: use latest or a checkpoint directory" }
        }
        if let compression, let problem = compression.problem() { return problem }
        return nil
    }

    /// Widths at layer boundaries: `[inputs, layer0.outputs, …]`.
    public var widths: [Int] { [model.inputs] + model.layers.map(\.outputs) }

    /// Parameters of layer i (weights and bias).
    public func parameterCount(layer index: Int) -> Int {
        let widths = self.widths
        return widths[index] * widths[index + 1] + widths[index + 1]
    }

    /// Total steps the job runs, given the data set size (epochs × steps per epoch).
    public func totalSteps(samples: Int) -> Int {
        if let steps { return steps }
        return (epochs ?? 1) * max(1, samples / batch)
    }

    /// Steps per epoch: a trailing partial batch is dropped, so every step has B samples.
    public func stepsPerEpoch(samples: Int) -> Int { max(1, samples / batch) }
}
