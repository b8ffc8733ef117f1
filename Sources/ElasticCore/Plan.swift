/// Who computes what in one generation: P stages (contiguous layer ranges) × D replicas, the
/// node in every (stage, replica) slot, and the spare nodes.
public struct Plan: Sendable, Equatable {
    public struct Slot: Hashable, Sendable {
        public var stage: Int
        public var replica: Int

        public init(stage: Int, replica: Int) {
            self.stage = stage
            self.replica = replica
        }
    }

    public var generation: Generation
    /// Layer range of each stage, covering 0..<layers in order.
    public var stages: [Range<Int>]
    public var replicas: Int
    /// `nodes[stage][replica]`.
    public var nodes: [[NodeID]]
    public var spares: [NodeID]

    public init(generation: Generation, stages: [Range<Int>], replicas: Int, nodes: [[NodeID]], spares: [NodeID]) {
        precondition(nodes.count == stages.count && nodes.allSatisfy { $0.count == replicas }, "a plan fills every slot")
        self.generation = generation
        self.stages = stages
        self.replicas = replicas
        self.nodes = nodes
        self.spares = spares
    }

    public var stageCount: Int { stages.count }
    public var workers: [NodeID] { nodes.flatMap { $0 } }

    public func slot(of node: NodeID) -> Slot? {
        for (stage, row) in nodes.enumerated() {
            if let replica = row.firstIndex(of: node) { return Slot(stage: stage, replica: replica) }
        }
        return nil
    }

    public func node(at slot: Slot) -> NodeID { nodes[slot.stage][slot.replica] }

    /// "2×2: [0..<3: a b] [3..<5: c d]"
    public var summary: String {
        "\(stageCount)×\(replicas): " + zip(stages, nodes).map { range, row in
            "[layers \(range.lowerBound)-\(range.upperBound - 1): \(row.map(\.value).joined(separator: " "))]"
        }.joined(separator: " ")
    }
}

/// Splits a count into `parts` contiguous ranges whose sizes differ by at most one, the larger
/// first: how a global batch is shared by replicas and a replica's share by micro-batches, and
/// how a ring all-reduce cuts its buffer. The math of a step never depends on it (invariant 4).
public enum EvenSplit {
    public static func range(_ index: Int, of parts: Int, count: Int) -> Range<Int> {
        precondition(parts > 0 && index >= 0 && index < parts, "index \(index) of \(parts) parts")
        let base = count / parts
        let extra = count % parts
        let start = index * base + min(index, extra)
        return start..<(start + base + (index < extra ? 1 : 0))
    }

    public static func ranges(parts: Int, count: Int) -> [Range<Int>] {
        (0..<parts).map { range($0, of: parts, count: count) }
    }
}

/// Who holds which stage's state at the last committed step: the slots of the last plan that
/// got ready, less every node that died since (a node that comes back is a newcomer: its
/// state may be stale).
public struct Holders: Sendable, Equatable {
    public var stages: [Range<Int>]
    /// `nodes[stage]`: the holders of that stage, in their replica order.
    public var nodes: [[NodeID]]

    public init(stages: [Range<Int>], nodes: [[NodeID]]) {
        self.stages = stages
        self.nodes = nodes
    }

    public init(_ plan: Plan) {
        self.init(stages: plan.stages, nodes: plan.nodes)
    }

    public mutating func keep(only members: Set<NodeID>) {
        nodes = nodes.map { $0.filter(members.contains) }
    }
}

/// A copy of one stage's layer state (weights and optimizer state at the last committed step)
/// from a node that holds it to a node that needs it.
public struct StateTransfer: Hashable, Sendable {
    public var stage: Int
    public var from: NodeID
    public var to: NodeID

    public init(stage: Int, from: NodeID, to: NodeID) {
        self.stage = stage
        self.from = from
        self.to = to
    }
}

/// The planner: P stages from the job (or 1), as contiguous layer ranges by a min–max
/// partition of layer costs, and as many replicas as the members allow up to the job's request
/// (or the batch). Re-planning keeps the stage ranges and every surviving worker on the stage
/// it holds, so the only state that moves is what new slots need.
public enum Planner {
    /// Bytes a worker needs to hold `layers` of `job`: weights, gradients and optimizer state
    /// (one slot per parameter for SGD, two for Adam), float32.
    public static func stateBytes(job: JobSpec, layers: Range<Int>) -> UInt64 {
        let parameters = layers.reduce(0) { $0 + job.parameterCount(layer: $1) }
        let copies = job.optimizer.kind == "adam" ? 4 : 3
        return UInt64(parameters) * 4 * UInt64(copies)
    }

    /// `memory`: each member's memory in bytes, where known; a member never gets a stage whose
    /// state does not fit (it stays a spare). Without a fixed plan in the job, P is the fewest
    /// stages whose largest one fits in the members' median memory.
    public static func plan(job: JobSpec, members: [NodeID], generation: Generation, previous: Holders? = nil, memory: [NodeID: UInt64] = [:]) -> Result<Plan, PlanShortage> {
        let costs = (0..<job.model.layers.count).map { Double(job.parameterCount(layer: $0)) }
        let stages: Int
        if let previous {
            stages = previous.stages.count
        } else if let requested = job.plan?.stages {
            stages = requested
        } else {
            let known = members.compactMap { memory[$0] }.sorted()
            let median = known.isEmpty ? UInt64.max : known[known.count / 2]
            stages = (1...costs.count).first { count in
                partition(costs: costs, into: count).allSatisfy { stateBytes(job: job, layers: $0) <= median }
            } ?? costs.count
        }
        let ranges = previous?.stages ?? partition(costs: costs, into: stages)
        let fits: (NodeID, Int) -> Bool = { node, stage in
            memory[node].map { $0 >= stateBytes(job: job, layers: ranges[stage]) } ?? true
        }
        let sorted = members.sorted()
        let wanted = job.plan?.replicas ?? job.batch
        // Replicas: as many as every stage can fill with members its state fits in.
        let eligible = sorted.filter { node in (0..<stages).contains { fits(node, $0) } }
        var replicas = min(wanted, eligible.count / stages)
        while replicas >= 1, !canFill(stages: stages, replicas: replicas, nodes: eligible, fits: fits) { replicas -= 1 }
        guard replicas >= 1 else {
            return .failure(PlanShortage(needed: stages, have: eligible.count))
        }
        let memberSet = Set(sorted)
        var nodes = Array(repeating: [NodeID](), count: stages)
        var placed: Set<NodeID> = []
        // Survivors keep their stage, in their old replica order.
        if let previous {
            for stage in 0..<stages {
                for node in previous.nodes[stage] where memberSet.contains(node) && nodes[stage].count < replicas && fits(node, stage) {
                    nodes[stage].append(node)
                    placed.insert(node)
                }
            }
        }
        // Everyone else fills the open slots in node order, replica by replica, the stages with
        // the fewest candidates first, so that a small worker lands where it fits.
        var free = sorted.filter { !placed.contains($0) }
        let order = (0..<stages).sorted { a, b in
            (free.filter { fits($0, a) }.count, a) < (free.filter { fits($0, b) }.count, b)
        }
        for replica in 0..<replicas {
            for stage in order where nodes[stage].count <= replica {
                guard let index = free.firstIndex(where: { fits($0, stage) }) else { continue }
                nodes[stage].append(free.remove(at: index))
            }
        }
        guard nodes.allSatisfy({ $0.count == replicas }) else {
            return .failure(PlanShortage(needed: stages * replicas, have: eligible.count))
        }
        return .success(Plan(generation: generation, stages: ranges, replicas: replicas, nodes: nodes, spares: free))
    }

    /// Whether `nodes` can fill `stages × replicas` slots with every node where it fits
    /// (greedy by the stages with the fewest candidates; exact when stages nest by size).
    private static func canFill(stages: Int, replicas: Int, nodes: [NodeID], fits: (NodeID, Int) -> Bool) -> Bool {
        var free = nodes
        let order = (0..<stages).sorted { a, b in (nodes.filter { fits($0, a) }.count, a) < (nodes.filter { fits($0, b) }.count, b) }
        for stage in order {
            for _ in 0..<replicas {
                guard let index = free.firstIndex(where: { fits($0, stage) }) else { return false }
                free.remove(at: index)
            }
        }
        return true
    }

    /// The copies `next` needs from the holders in `previous` (same stage ranges): every node in
    /// a stage it did not hold gets the stage's state from a holder, sources taken in turn. A
    /// holder that keeps its stage in `next` is preferred; a holder that is no slot of `next` (a
    /// spare now, or a member leaving gracefully that waits to hand off) serves only when no such
    /// holder is left. Nil when some stage that needs a copy has no holder at all: that state is
    /// lost.
    public static func transfers(from previous: Holders?, to next: Plan) -> [StateTransfer]? {
        guard let previous else { return [] }
        guard previous.stages == next.stages else { return nil }
        var transfers: [StateTransfer] = []
        for stage in 0..<next.stageCount {
            let staying = previous.nodes[stage].filter { next.nodes[stage].contains($0) }
            let sources = staying.isEmpty ? previous.nodes[stage].filter { next.slot(of: $0) == nil } : staying
            let newcomers = next.nodes[stage].filter { !previous.nodes[stage].contains($0) }
            guard !newcomers.isEmpty else { continue }
            guard !sources.isEmpty else { return nil }
            for (index, node) in newcomers.enumerated() {
                transfers.append(StateTransfer(stage: stage, from: sources[index % sources.count], to: node))
            }
        }
        return transfers
    }

    public struct PlanShortage: Error, Sendable, Equatable {
        public init(needed: Int, have: Int) {
            self.needed = needed
            self.have = have
        }

        public let needed: Int
        public let have: Int
        public var explanation: String { "the plan needs \(needed) worker(s), \(have) member(s) are alive" }
    }

    /// Contiguous ranges of `costs` into `parts` non-empty groups minimizing the largest group
    /// sum (dynamic programming; ties go to the earliest split).
    public static func partition(costs: [Double], into parts: Int) -> [Range<Int>] {
        let n = costs.count
        precondition(parts >= 1 && parts <= n, "cannot cut \(n) layers into \(parts) stages")
        var prefix = [0.0]
        for cost in costs { prefix.append(prefix.last! + cost) }
        // best[k][i]: the smallest largest-sum for the first i layers in k groups.
        var best = Array(repeating: Array(repeating: Double.infinity, count: n + 1), count: parts + 1)
        var cut = Array(repeating: Array(repeating: 0, count: n + 1), count: parts + 1)
        best[0][0] = 0
        for k in 1...parts {
            for i in k...n {
                for j in (k - 1)..<i {
                    let value = max(best[k - 1][j], prefix[i] - prefix[j])
                    if value < best[k][i] {
                        best[k][i] = value
                        cut[k][i] = j
                    }
                }
            }
        }
        var ranges: [Range<Int>] = []
        var end = n
        for k in stride(from: parts, through: 1, by: -1) {
            let start = cut[k][end]
            ranges.append(start..<end)
            end = start
        }
        return ranges.reversed()
    }
}
