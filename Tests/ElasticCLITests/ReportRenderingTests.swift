import ElasticCore
import ElasticServices
import ElasticWire
import Foundation
import Testing

/// `elastic status` and the progress reporter render from values alone: no controller, no clock.
@Suite struct ReportRenderingTests {
    static func member(_ node: NodeID, _ state: Membership.State) -> MemberStatus {
        MemberStatus(node: node, incarnation: 1, address: "127.0.0.1:1", state: state, sinceGeneration: 3, lastHeardAge: .milliseconds(120),
                     capacity: Capacity(cores: 2, memoryBytes: 1 << 30, gflops: 10), note: "")
    }

    static func status(committed: UInt64 = 120, samplesPerSecond: Double = 5_120, grid: Bool = true) -> ClusterStatus {
        let plan = Plan(generation: 7, stages: [0..<2, 2..<5], replicas: 2, nodes: [["worker-1", "worker-2"], ["worker-3", "worker-5"]], spares: ["worker-6"])
        let training = TrainingStatus(
            job: "w1", phase: "training", detail: "", committedSteps: committed, totalSteps: 300, lastLoss: 1.5,
            samplesPerSecond: samplesPerSecond, plan: plan.summary, recent: [], grid: grid ? TrainingStatus.Grid(plan) : nil, batch: 256)
        return ClusterStatus(
            generation: 7, uptime: .seconds(42), heartbeatInterval: .milliseconds(500), deadTimeout: .seconds(2),
            members: [member("worker-1", .alive), member("worker-2", .alive), member("worker-3", .suspect), member("worker-5", .alive),
                      member("worker-6", .alive), member("worker-4", .dead)],
            training: training)
    }

    @Test func theGridHasAStageRowAndAReplicaColumnWithEachNodesState() throws {
        let table = StatusReport(Self.status()).table()
        let lines = table.split(separator: "\n").map(String.init)
        let header = try #require(lines.firstIndex { $0.contains("REPLICA 0") })
        #expect(lines[header - 1] == "  plan of generation 7 (2 stage(s) × 2 replica(s)):")
        #expect(lines[header].hasPrefix("    ") && lines[header].contains("REPLICA 1"))
        #expect(lines[header + 1].hasPrefix("    stage 0 (layers 0-1)"))
        #expect(lines[header + 1].contains("worker-1 (alive)") && lines[header + 1].contains("worker-2 (alive)"))
        #expect(lines[header + 2].hasPrefix("    stage 1 (layers 2-4)"))
        #expect(lines[header + 2].contains("worker-3 (suspect)") && lines[header + 2].contains("worker-5 (alive)"))
        #expect(lines[header + 3] == "    spares: worker-6 (alive)")
        // Columns line up: each replica's cells start where its header does.
        let column = try #require(lines[header].range(of: "REPLICA 1")).lowerBound.utf16Offset(in: lines[header])
        #expect(lines[header + 1].range(of: "worker-2")?.lowerBound.utf16Offset(in: lines[header + 1]) == column)
        #expect(lines[header + 2].range(of: "worker-5")?.lowerBound.utf16Offset(in: lines[header + 2]) == column)
    }

    @Test func theProgressLineHasStepsPercentLossThroughputAndETA() {
        let training = StatusReport(Self.status()).training
        // 180 steps left × 256 samples at 5120 samples/s = 9 s.
        #expect(training?.etaSeconds == 9)
        #expect(training?.percent == 40)
        #expect(training?.progressLine(barWidth: 10) == "step 120/300 [####······] 40.0 % · loss 1.500000 · 5120 samples/s · ETA 9s")
        // Unknown throughput: no ETA yet; finished: no ETA at all.
        #expect(StatusReport(Self.status(samplesPerSecond: 0)).training?.progressLine(barWidth: 4).hasSuffix("ETA -") == true)
        #expect(StatusReport(Self.status(committed: 300)).training?.progressLine(barWidth: 4) == "step 300/300 [####] 100.0 % · loss 1.500000 · 5120 samples/s")
    }

    @Test func theJSONHasTheGridAndStaysDecodable() throws {
        let report = StatusReport(Self.status())
        let json = try report.json()
        #expect(try JSONDecoder().decode(StatusReport.self, from: Data(json.utf8)) == report)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let training = try #require(object["training"] as? [String: Any])
        let grid = try #require(training["grid"] as? [String: Any])
        #expect(grid["generation"] as? Int == 7)
        let stages = try #require(grid["stages"] as? [[String: Any]])
        #expect(stages.map { $0["firstLayer"] as? Int } == [0, 2] && stages.map { $0["lastLayer"] as? Int } == [1, 4])
        let cells = try #require(stages[1]["replicas"] as? [[String: Any]])
        #expect(cells.map { $0["node"] as? String } == ["worker-3", "worker-5"])
        #expect(cells.map { $0["state"] as? String } == ["suspect", "alive"])
        #expect((grid["spares"] as? [[String: Any]])?.first?["node"] as? String == "worker-6")
        #expect(training["etaSeconds"] as? Double == 9)
    }

    @Test func withoutAGridTheSummaryIsShown() {
        let table = StatusReport(Self.status(grid: false)).table()
        #expect(table.contains("  plan 2×2: [layers 0-1: worker-1 worker-2] [layers 2-4: worker-3 worker-5]"))
        #expect(!table.contains("REPLICA"))
    }

    @Test func aNodeTheControllerNoLongerListsIsUnknown() {
        var status = Self.status()
        status.members.removeAll { $0.node == "worker-5" }
        #expect(StatusReport(status).table().contains("worker-5 (unknown)"))
    }

    @Test func progressBarsAndRates() {
        #expect(progressBar(fraction: 0, width: 4) == "[····]")
        #expect(progressBar(fraction: 0.5, width: 4) == "[##··]")
        #expect(progressBar(fraction: 2, width: 4) == "[####]")
        #expect(progressBar(fraction: .nan, width: 4) == "[····]")
        #expect(megabytesPerSecond(bytes: 25_000_000, seconds: 2) == "12.5 MB/s")
        #expect(ProgressReporter.render(phase: "writing", completed: 4 << 20, total: 8 << 20, unit: .bytes, elapsed: .seconds(1))
            == "writing [##########··········] 50 % 4.0 MiB/8.0 MiB · 4.2 MB/s")
        #expect(ProgressReporter.render(phase: "verifying", completed: 3, total: 12, unit: .items("blobs"), elapsed: .zero)
            == "verifying [#####···············] 25 % 3/12 blobs")
    }

    @Test func theThrottleDrawsMilestonesAndOtherwiseOncePerInterval() {
        var throttle = ProgressThrottle(interval: .seconds(3))
        let drawn = [(Duration.zero, false), (.seconds(1), false), (.seconds(2), true), (.seconds(4), false), (.seconds(5), false)]
            .map { throttle.shouldDraw(now: $0.0, milestone: $0.1) }
        #expect(drawn == [true, false, true, false, true])
    }

    /// Lines output (a log, a pipe): no carriage return or escape ever, steps numbered.
    @Test func linesOutputNeverDrawsInPlace() {
        let lines = Lines()
        let reporter = ProgressReporter("join", output: .lines { lines.append($0) }, steps: 2, interval: .seconds(3600))
        reporter.step("fetching the cluster CA")
        for done in 0...100 { reporter.update("writing", completed: done, total: 100, unit: .items("shards")) }
        reporter.step("connecting")
        reporter.finish("done")
        #expect(lines.all == [
            "join: step 1/2: fetching the cluster CA",
            "join: writing [····················] 0 % 0/100 shards",
            "join: writing [####################] 100 % 100/100 shards",
            "join: step 2/2: connecting",
            "join: done",
        ])
        #expect(!lines.all.joined().contains("\r") && !lines.all.joined().contains("\u{1B}"))
    }

    /// Terminal output: the bar is redrawn in place and ended by a newline.
    @Test func terminalOutputRedrawsOneLine() {
        let text = Lines()
        let reporter = ProgressReporter("copy", output: .terminal { text.append($0) }, interval: .zero)
        reporter.update("writing", completed: 1, total: 2, unit: .items("blobs"))
        reporter.update("writing", completed: 2, total: 2, unit: .items("blobs"))
        reporter.finish()
        let joined = text.all.joined()
        #expect(joined.hasPrefix("\rcopy: writing [##########··········] 50 % 1/2 blobs\u{1B}[K\r"))
        #expect(joined.hasSuffix("100 % 2/2 blobs\u{1B}[K\n"))
    }
}

final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}
