import ElasticCore
import ElasticWire
import Foundation

/// `elastic status` as a table or as JSON (the JSON field names are a stable interface).
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var node: String
        public var state: String
        public var incarnation: UInt64
        /// The generation at which the member joined (live) or departed (dead, left).
        public var sinceGeneration: UInt64
        public var address: String
        public var lastHeartbeatAgeMs: Int64?
        public var cores: UInt32
        public var memoryBytes: UInt64
        public var gflops: Double
        public var note: String
    }

    public struct Training: Codable, Sendable, Equatable {
        public struct Step: Codable, Sendable, Equatable {
            public var step: UInt64
            public var epoch: UInt64
            public var nextSample: UInt64
            public var loss: Double
            public var replicasAgree: Bool
        }

        public var job: String
        public var phase: String
        public var detail: String
        public var committedSteps: UInt64
        public var totalSteps: UInt64
        public var lastLoss: Double?
        public var samplesPerSecond: Double
        public var plan: String
        public var recent: [Step]
        /// Each slot's gradient exchange in its last step: bytes sent and received, and the
        /// ratio of an uncompressed float32 ring's bytes to those sent.
        public var traffic: [Traffic]

        public struct Traffic: Codable, Sendable, Equatable {
            public var node: String
            public var bytesSent: UInt64
            public var bytesReceived: UInt64
            public var compressionRatio: Double
        }

        /// Committed over total steps, 0…100.
        public var percent: Double
        /// Samples per step.
        public var batch: UInt32
        /// The time left at the current throughput; nil while it is unknown.
        public var etaSeconds: Double?
        /// The current plan; nil before the first one.
        public var grid: Grid?
        /// How checkpointing goes; nil when the job takes no checkpoints.
        public var checkpoints: Checkpoints?

        public struct Checkpoints: Codable, Sendable, Equatable {
            /// The newest valid checkpoint (steps applied) and its age; nil while there is none.
            public var newestStep: UInt64?
            public var newestAgeSeconds: Double?
            /// True while the last checkpoint failed; how many failed in a row and in all.
            public var failing: Bool
            public var consecutiveFailures: UInt32
            public var failures: UInt32
            public var lastFailureStep: UInt64?
            public var lastFailure: String?

            init(_ health: TrainingStatus.CheckpointHealth) {
                newestStep = health.newestStep
                newestAgeSeconds = health.newestAgeMilliseconds.map { Double($0) / 1000 }
                failing = health.consecutiveFailures > 0
                consecutiveFailures = health.consecutiveFailures
                failures = health.failures
                lastFailureStep = health.lastFailure?.step
                lastFailure = health.lastFailure?.reason
            }

            /// "checkpoints: FAILING, 2 in a row (step 60: … no space left on device); newest valid: step 20, 41s ago"
            public var line: String {
                let age = newestAgeSeconds.map { ", \(Duration.milliseconds(Int64($0 * 1000)).shortDescription) ago" } ?? ""
                let newest = newestStep.map { "newest valid: step \($0)\(age)" } ?? "no valid checkpoint yet"
                if failing {
                    let last = lastFailure.map { " (step \(lastFailureStep ?? 0): \($0))" } ?? ""
                    return "checkpoints: FAILING, \(consecutiveFailures) in a row\(last); \(newest)"
                }
                return "checkpoints: \(newest)\(failures > 0 ? "; \(failures) failed earlier" : "")"
            }
        }

        /// The plan as a grid: rows are stages, columns replicas.
        public struct Grid: Codable, Sendable, Equatable {
            public struct Stage: Codable, Sendable, Equatable {
                public var stage: Int
                public var firstLayer: Int
                public var lastLayer: Int
                public var replicas: [Cell]
            }

            /// A node in the plan and its member state (`alive`, `suspect`, `dead`, `left`,
            /// or `unknown` when the controller no longer lists it).
            public struct Cell: Codable, Sendable, Equatable {
                public var replica: Int?
                public var node: String
                public var state: String
            }

            public var generation: UInt64
            public var stages: [Stage]
            public var spares: [Cell]
        }
    }

    public var generation: UInt64
    public var uptimeMs: Int64
    public var heartbeatIntervalMs: Int64
    public var deadTimeoutMs: Int64
    public var members: [Member]
    public var training: Training?

    public init(_ status: ClusterStatus) {
        generation = status.generation.value
        uptimeMs = status.uptime.milliseconds
        heartbeatIntervalMs = status.heartbeatInterval.milliseconds
        deadTimeoutMs = status.deadTimeout.milliseconds
        members = status.members.map {
            let live = $0.state == .alive || $0.state == .suspect
            return Member(
                node: $0.node.value, state: $0.state.rawValue, incarnation: $0.incarnation.value,
                sinceGeneration: $0.sinceGeneration.value, address: $0.address,
                lastHeartbeatAgeMs: live ? $0.lastHeardAge.milliseconds : nil,
                cores: $0.capacity.cores, memoryBytes: $0.capacity.memoryBytes, gflops: $0.capacity.gflops, note: $0.note)
        }
        var states: [String: String] = [:]
        for member in status.members where states[member.node.value] == nil { states[member.node.value] = member.state.rawValue }
        training = status.training.map { training in
            let remaining = training.totalSteps > training.committedSteps ? training.totalSteps - training.committedSteps : 0
            let eta: Double? = if remaining == 0 { 0 } else if training.samplesPerSecond > 0, training.batch > 0 {
                Double(remaining) * Double(training.batch) / training.samplesPerSecond
            } else { nil }
            let grid = training.grid.map { grid in
                Training.Grid(
                    generation: grid.generation,
                    stages: grid.stages.enumerated().map { index, stage in
                        Training.Grid.Stage(
                            stage: index, firstLayer: Int(stage.firstLayer), lastLayer: Int(stage.endLayer) - 1,
                            replicas: stage.nodes.enumerated().map { Training.Grid.Cell(replica: $0, node: $1.value, state: states[$1.value] ?? "unknown") })
                    },
                    spares: grid.spares.map { Training.Grid.Cell(replica: nil, node: $0.value, state: states[$0.value] ?? "unknown") })
            }
            return Training(
                job: training.job, phase: training.phase, detail: training.detail, committedSteps: training.committedSteps,
                totalSteps: training.totalSteps, lastLoss: training.lastLoss.isFinite ? training.lastLoss : nil,
                samplesPerSecond: training.samplesPerSecond, plan: training.plan,
                recent: training.recent.map { Training.Step(step: $0.step, epoch: $0.epoch, nextSample: $0.nextSample, loss: $0.loss, replicasAgree: $0.replicasAgree) },
                traffic: training.traffic.map { Training.Traffic(node: $0.node.value, bytesSent: $0.bytesSent, bytesReceived: $0.bytesReceived, compressionRatio: $0.ratio) },
                percent: training.totalSteps > 0 ? 100 * Double(min(training.committedSteps, training.totalSteps)) / Double(training.totalSteps) : 0,
                batch: training.batch, etaSeconds: eta, grid: grid, checkpoints: training.checkpoints.map(Training.Checkpoints.init))
        }
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public func table() -> String {
        let live = members.filter { $0.state == "alive" || $0.state == "suspect" }
        var lines = ["generation \(generation) · \(live.count) live member(s) · up \(Duration.milliseconds(uptimeMs).shortDescription) · heartbeat \(Duration.milliseconds(heartbeatIntervalMs).shortDescription), dead after \(Duration.milliseconds(deadTimeoutMs).shortDescription)"]
        guard !members.isEmpty else {
            lines.append("no members yet: create a token with 'elastic token create' and start workers with 'elastic join'")
            return lines.joined(separator: "\n")
        }
        var rows = [["NODE", "STATE", "INCARNATION", "GENERATION", "ADDRESS", "HEARTBEAT", "CORES", "MEMORY", "GFLOP/S", "NOTE"]]
        for member in members {
            rows.append([
                member.node, member.state, String(member.incarnation), String(member.sinceGeneration), member.address,
                member.lastHeartbeatAgeMs.map { "\(Duration.milliseconds($0).shortDescription) ago" } ?? "-",
                member.cores == 0 ? "-" : String(member.cores),
                member.memoryBytes == 0 ? "-" : String(format: "%.1fGiB", Double(member.memoryBytes) / 1_073_741_824),
                member.gflops == 0 ? "-" : String(format: "%.1f", member.gflops),
                member.note,
            ])
        }
        lines += formatTable(rows)
        if let training {
            lines.append("")
            lines.append("job \(training.job): \(training.phase)\(training.detail.isEmpty ? "" : " — " + training.detail)")
            lines.append("  " + training.progressLine())
            if let checkpoints = training.checkpoints { lines.append("  " + checkpoints.line) }
            if let grid = training.grid {
                lines.append("  plan of generation \(grid.generation) (\(grid.stages.count) stage(s) × \(grid.stages.first?.replicas.count ?? 0) replica(s)):")
                lines += grid.table().map { "    " + $0 }
            } else if !training.plan.isEmpty {
                lines.append("  plan \(training.plan)")
            }
            let exchanging = training.traffic.filter { $0.bytesSent > 0 }
            if !exchanging.isEmpty {
                let sent = exchanging.map(\.bytesSent).reduce(0, +) / UInt64(exchanging.count)
                let received = exchanging.map(\.bytesReceived).reduce(0, +) / UInt64(exchanging.count)
                let ratio = exchanging.map(\.compressionRatio).reduce(0, +) / Double(exchanging.count)
                lines.append("  gradient exchange per step and worker: \(byteCount(sent)) sent, \(byteCount(received)) received, \(String(format: "%.1f", ratio))× fewer bytes than float32")
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension StatusReport.Training {
    /// "step 120/300 [#####·······] 40.0 % · loss 1.523000 · 5120 samples/s · ETA 12s"
    public func progressLine(barWidth: Int = 24) -> String {
        let fraction = totalSteps > 0 ? Double(committedSteps) / Double(totalSteps) : 0
        var parts = [
            "step \(committedSteps)/\(totalSteps) \(progressBar(fraction: fraction, width: barWidth)) \(String(format: "%.1f", percent)) %",
            "loss \(lastLoss.map { String(format: "%.6f", $0) } ?? "-")",
            "\(String(format: "%.0f", samplesPerSecond)) samples/s",
        ]
        if committedSteps < totalSteps {
            parts.append("ETA \(etaSeconds.map { Duration.seconds(Int64(min(1e9, max(0, $0)).rounded(.up))).shortDescription } ?? "-")")
        }
        return parts.joined(separator: " · ")
    }
}

extension StatusReport.Training.Grid {
    /// Rows "stage 0 (layers 0-1)", a column per replica, cells "node (state)"; then the spares.
    public func table() -> [String] {
        let replicas = stages.map(\.replicas.count).max() ?? 0
        var rows = [["STAGE"] + (0..<replicas).map { "REPLICA \($0)" }]
        for stage in stages {
            rows.append(["stage \(stage.stage) (layers \(stage.firstLayer)-\(stage.lastLayer))"] + stage.replicas.map(\.label))
        }
        var lines = formatTable(rows)
        lines.append("spares: " + (spares.isEmpty ? "none" : spares.map(\.label).joined(separator: ", ")))
        return lines
    }
}

extension StatusReport.Training.Grid.Cell {
    /// "worker-1 (alive)".
    var label: String { "\(node) (\(state))" }
}

public struct TokenReport: Codable, Sendable {
    public struct Entry: Codable, Sendable {
        public var id: String
        public var createdAt: Int64
        public var expiresAt: Int64?
        public var usesLeft: UInt32?
        public var uses: UInt32
        public var description: String
    }

    public var tokens: [Entry]

    public init(_ tokens: [TokenInfo]) {
        self.tokens = tokens.map { Entry(id: $0.id, createdAt: $0.createdAt, expiresAt: $0.expiresAt, usesLeft: $0.usesLeft, uses: $0.uses, description: $0.description) }
    }

    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    public func table(now: Int64) -> String {
        guard !tokens.isEmpty else { return "no bootstrap tokens; create one with 'elastic token create'" }
        var rows = [["ID", "EXPIRES", "USES", "LEFT", "DESCRIPTION"]]
        for token in tokens {
            let expires: String
            if let at = token.expiresAt {
                expires = at <= now ? "expired" : "in \(Duration.seconds(at - now).shortDescription)"
            } else {
                expires = "never"
            }
            rows.append([token.id, expires, String(token.uses), token.usesLeft.map(String.init) ?? "unlimited", token.description])
        }
        return formatTable(rows).joined(separator: "\n")
    }
}

/// Left-aligned columns separated by two spaces.
func formatTable(_ rows: [[String]]) -> [String] {
    guard let width = rows.map(\.count).max() else { return [] }
    let widths = (0..<width).map { column in rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
    return rows.map { row in
        row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
}

/// 1536 → "1.5 KiB".
func byteCount(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f ", value) + units[unit]
}
