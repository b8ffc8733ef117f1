/// One committed step, as the controller's ledger records it.
public struct LedgerEntry: Sendable, Equatable {
    public var step: Int
    public var epoch: Int
    /// Position in the epoch's sample order after this step: (epoch, next sample index).
    public var nextSample: Int
    /// Mean loss over the global batch.
    public var loss: Double
    public var generation: Generation
    /// Whether every replica of every stage reported the same state checksum before the
    /// update of this step (DESIGN.md invariant 3).
    public var replicasAgree: Bool
    public var committedAt: Timestamp

    public init(step: Int, epoch: Int, nextSample: Int, loss: Double, generation: Generation, replicasAgree: Bool, committedAt: Timestamp) {
        self.step = step
        self.epoch = epoch
        self.nextSample = nextSample
        self.loss = loss
        self.generation = generation
        self.replicasAgree = replicasAgree
        self.committedAt = committedAt
    }
}

/// The controller's side of training: turns the live members and the job into a plan, starts
/// each step, collects the slots' reports and commits the step when every slot has reported
/// (updates are applied by the workers only on commit, so a step is all or nothing).
///
/// Pure, like `Membership`: inputs in, directives out. When the members change mid-run it
/// re-plans at the step boundary: the step in flight is abandoned (nothing was applied), the
/// survivors keep their layers, new slots copy state from a surviving holder, and training goes
/// on from the last committed step. When every holder of some stage is gone, it waits.
public struct TrainingCoordinator: Sendable {
    public enum Phase: Sendable, Equatable {
        case idle
        /// Not enough members for the plan.
        case waiting(String)
        /// A plan was sent; waiting for every slot to be ready.
        case assigning
        case running
        case finished
        case stopped(String)

        public var name: String {
            switch self {
            case .idle: "idle"
            case .waiting: "waiting"
            case .assigning: "assigning"
            case .running: "running"
            case .finished: "finished"
            case .stopped: "stopped"
            }
        }

        public var detail: String {
            switch self {
            case .waiting(let why), .stopped(let why): why
            default: ""
            }
        }
    }

    public enum Directive: Sendable, Equatable {
        /// Send the plan (and the job) to every node in it, starting at `nextStep`; `transfers`
        /// say who copies which stage's state from whom first.
        case assign(Plan, nextStep: Int, transfers: [StateTransfer])
        /// Tell every worker of the plan to run `step`.
        case startStep(Int, generation: Generation)
        /// Tell every worker of the plan that `step` committed: apply its update.
        case commit(Int, generation: Generation)
        case record(LedgerEntry)
        case finished(steps: Int)
        case stopped(String)
        /// Ask the membership for a new generation (the plan must be rebuilt under it).
        case openGeneration(reason: String)
        /// Every holder of some stage is gone: training goes back to the checkpoint at `toStep`
        /// (steps applied); the committed steps from there on are computed again.
        case rolledBack(toStep: Int, fromStep: Int, checkpoint: String)
    }

    public struct Report: Sendable, Equatable {
        public var lossSum: Double
        public var samples: Int
        public var stateChecksum: UInt64

        public init(lossSum: Double, samples: Int, stateChecksum: UInt64) {
            self.lossSum = lossSum
            self.samples = samples
            self.stateChecksum = stateChecksum
        }
    }

    public let job: JobSpec
    public let samples: Int
    public let totalSteps: Int
    public private(set) var phase: Phase = .idle
    public private(set) var plan: Plan?
    /// Who holds valid state; nil until a plan got ready.
    public private(set) var holders: Holders?
    /// Re-plans so far (each abandons at most the step in flight).
    public private(set) var replans = 0
    public private(set) var ledger: [LedgerEntry] = []
    /// The step being computed (not yet committed).
    public private(set) var currentStep: Int?
    private var ready: Set<NodeID> = []
    /// When the current assignment or step began; a run that makes no progress for
    /// `stallTimeout` is rebuilt under a new generation.
    private var progressAt: Timestamp?
    public var stallTimeout: Duration = .seconds(20)
    /// Set when the current plan must be sent again under the next generation.
    private var rebuild = false
    private var reports: [NodeID: Report] = [:]
    /// The copies of the current assignment.
    private var transfers: [StateTransfer] = []

    public init(job: JobSpec, samples: Int) {
        self.job = job
        self.samples = samples
        self.totalSteps = job.totalSteps(samples: samples)
    }

    /// The next step to run: one past the last committed step (or the step a restored
    /// checkpoint was written at).
    public var nextStep: Int { (ledger.last?.step).map { $0 + 1 } ?? resumeStep }

    /// Where training starts when no committed step is in the ledger: 0, or the checkpoint's step.
    public private(set) var resumeStep = 0
    /// The newest checkpoint (steps applied, directory): what a plan without holders restores.
    public private(set) var checkpoint: (step: Int, path: String)?
    /// Steps committed again after going back to a checkpoint.
    public private(set) var rolledBackSteps = 0

    /// The checkpoint every slot without state loads its layers from in the current assignment:
    /// when nobody holds state at the next step and a checkpoint was written exactly there.
    public var restoreSource: String? {
        guard holders == nil, let checkpoint, checkpoint.step == nextStep, nextStep > 0 else { return nil }
        return checkpoint.path
    }

    /// Starts the job from a checkpoint taken after `step` steps (before any plan).
    public mutating func resume(from step: Int, path: String) {
        precondition(ledger.isEmpty && plan == nil, "resume before training starts")
        resumeStep = step
        checkpoint = (step, path)
    }

    /// Continues a job after a controller restart, from its durable state: the committed steps,
    /// who held each stage, and the newest checkpoint. The next membership change plans with
    /// those holders, so workers that kept their layers keep them and nobody restarts.
    public mutating func recover(ledger: [LedgerEntry], resumeStep: Int, rolledBackSteps: Int, holders: Holders?, checkpoint: (step: Int, path: String)?) {
        precondition(self.ledger.isEmpty && plan == nil, "recover before training starts")
        self.ledger = ledger
        self.resumeStep = resumeStep
        self.rolledBackSteps = rolledBackSteps
        self.holders = holders
        self.checkpoint = checkpoint
        if nextStep >= totalSteps { phase = .finished }
    }

    /// A checkpoint became visible: the fallback when a stage's state is lost.
    public mutating func onCheckpoint(step: Int, path: String) {
        if step >= (checkpoint?.step ?? 0) { checkpoint = (step, path) }
    }

    /// Nodes the current assignment copies state from, while it is being set up: a member that
    /// leaves gracefully is released once it is no longer one of them.
    public var transferSources: Set<NodeID> {
        phase == .assigning ? Set(transfers.map(\.from)) : []
    }

    /// The live member set changed (or training starts). `departing`: members that left
    /// gracefully but still hold their state and wait to hand it off; they get no slot, but
    /// serve as copy sources when no member holds their stage.
    public mutating func onMembership(members: [NodeID], generation: Generation, memory: [NodeID: UInt64] = [:], departing: Set<NodeID> = []) -> [Directive] {
        var directives: [Directive] = []
        if phase == .finished || phase.name == "stopped" { return directives }
        if nextStep >= totalSteps {
            // Resumed from a checkpoint written at the end of the job.
            phase = .finished
            return [.finished(steps: totalSteps)]
        }
        // Nothing has been computed yet: plan from scratch. Afterwards the holders say who has
        // which layers; a holder that died is forgotten for good.
        holders?.keep(only: Set(members).union(departing))
        // (A resumed job has state before its first commit: the restored holders.)
        let previous = ledger.isEmpty && resumeStep == 0 ? nil : holders
        let planned = Planner.plan(job: job, members: members, generation: generation, previous: previous, memory: memory)
        guard case .success(let next) = planned else {
            let shortage = planned
            if case .failure(let reason) = shortage {
                currentStep = nil
                phase = .waiting(reason.explanation)
            }
            return directives
        }
        if let plan, phase == .running || phase == .assigning, plan.nodes == next.nodes, !rebuild {
            return directives  // a spare came or went: the plan stands
        }
        rebuild = false
        guard let transfers = Planner.transfers(from: previous, to: next) else {
            let lost = (0..<next.stageCount).filter { stage in previous!.nodes[stage].isEmpty }
            let layers = lost.map { "\(next.stages[$0].lowerBound)-\(next.stages[$0].upperBound - 1)" }.joined(separator: ", ")
            currentStep = nil
            guard let checkpoint else {
                phase = .waiting("every holder of layers \(layers) is gone and there is no checkpoint to resume from — training waits after step \(nextStep - 1)")
                return directives
            }
            // Go back to the checkpoint: everyone loads it, the steps after it are redone.
            let from = nextStep
            ledger.removeAll { $0.step >= checkpoint.step }
            rolledBackSteps += from - checkpoint.step
            resumeStep = checkpoint.step
            holders = nil
            directives.append(.rolledBack(toStep: checkpoint.step, fromStep: from, checkpoint: checkpoint.path))
            guard case .success(let fresh) = Planner.plan(job: job, members: members, generation: generation, memory: memory) else {
                phase = .waiting("every holder of layers \(layers) is gone; waiting for members to restore the checkpoint of step \(checkpoint.step)")
                return directives
            }
            replans += 1
            plan = fresh
            phase = .assigning
            self.transfers = []
            ready = []
            reports = [:]
            progressAt = nil
            directives.append(.assign(fresh, nextStep: nextStep, transfers: []))
            return directives
        }
        if phase == .running || phase == .assigning, plan != nil { replans += 1 }
        plan = next
        phase = .assigning
        self.transfers = transfers
        ready = []
        reports = [:]
        currentStep = nil
        progressAt = nil
        directives.append(.assign(next, nextStep: nextStep, transfers: transfers))
        return directives
    }

    /// A worker has its layers and its data-plane links for `generation`.
    public mutating func onReady(node: NodeID, generation: Generation) -> [Directive] {
        var directives: [Directive] = []
        guard phase == .assigning, let plan, plan.generation == generation, plan.slot(of: node) != nil else { return directives }
        ready.insert(node)
        progressAt = nil
        if ready.count == plan.workers.count {
            phase = .running
            // Every slot now holds its stage at the next step.
            holders = Holders(plan)
            directives.append(contentsOf: start(nextStep, plan: plan))
        }
        return directives
    }

    /// A slot finished its part of `step` (gradients all-reduced, update pending).
    public mutating func onStepDone(node: NodeID, step: Int, generation: Generation, report: Report, now: Timestamp) -> [Directive] {
        var directives: [Directive] = []
        guard phase == .running, let plan, plan.generation == generation, step == currentStep, plan.slot(of: node) != nil else {
            return directives
        }
        reports[node] = report
        progressAt = nil
        guard reports.count == plan.workers.count else { return directives }
        let lossSum = plan.nodes.last!.reduce(0.0) { $0 + (reports[$1]?.lossSum ?? 0) }
        let agree = plan.nodes.allSatisfy { row in Set(row.map { reports[$0]!.stateChecksum }).count == 1 }
        let perEpoch = job.stepsPerEpoch(samples: samples)
        let entry = LedgerEntry(
            step: step, epoch: step / perEpoch, nextSample: (step % perEpoch + 1) * job.batch,
            loss: lossSum / Double(job.batch), generation: generation, replicasAgree: agree, committedAt: now)
        ledger.append(entry)
        reports = [:]
        currentStep = nil
        directives.append(.record(entry))
        directives.append(.commit(step, generation: generation))
        if step + 1 >= totalSteps {
            phase = .finished
            directives.append(.finished(steps: totalSteps))
        } else {
            directives.append(contentsOf: start(step + 1, plan: plan))
        }
        return directives
    }

    /// A worker gave up on a step because a link broke while its peers are still members: the
    /// step is abandoned and the same plan is rebuilt under a new generation.
    public mutating func onStepAbandoned(node: NodeID, generation: Generation, reason: String) -> [Directive] {
        guard let plan, plan.generation == generation, phase == .running || phase == .assigning, !rebuild else { return [] }
        rebuild = true
        currentStep = nil
        return [.openGeneration(reason: "\(node) abandoned a step: \(reason)")]
    }

    /// Watches for a plan that stopped making progress (a lost message, a peer that neither
    /// answers nor dies): after `stallTimeout` without a ready or a report, the plan is rebuilt
    /// under a new generation and the step in flight redone.
    public mutating func onTick(now: Timestamp) -> [Directive] {
        guard phase == .running || phase == .assigning, plan != nil, !rebuild else {
            progressAt = nil
            return []
        }
        guard let since = progressAt else {
            progressAt = now
            return []
        }
        guard now.since(since) > stallTimeout else { return [] }
        rebuild = true
        currentStep = nil
        progressAt = nil
        let what = phase == .assigning ? "setting up the plan" : "step \(nextStep)"
        return [.openGeneration(reason: "no progress on \(what) for \(stallTimeout.shortDescription)")]
    }

    /// The controller did not run for `forgiven` (a pause): the stall timer does not count it.
    public mutating func onPause(forgiven: Duration) {
        progressAt = progressAt.map { $0 + forgiven }
    }

    /// Starts this job on the next generation (it was submitted while the members stand still).
    public mutating func start() -> [Directive] {
        rebuild = true
        return [.openGeneration(reason: "job \(job.name) submitted")]
    }

    /// A worker could not run its part (bad data, a failed link): training stops with its reason.
    public mutating func onFailure(node: NodeID, generation: Generation, reason: String) -> [Directive] {
        guard let plan, plan.generation == generation, phase == .running || phase == .assigning else { return [] }
        let text = "\(node): \(reason)"
        phase = .stopped(text)
        return [.stopped(text)]
    }

    private mutating func start(_ step: Int, plan: Plan) -> [Directive] {
        currentStep = step
        reports = [:]
        return [.startStep(step, generation: plan.generation)]
    }
}
