import ElasticServices
import ElasticTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `/metrics`, `/api/state` and the dashboard of a real local cluster while it trains (issue 7):
/// scraped and parsed strictly, and the page rendered by headless Chromium.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct ObservabilityProcessTests {
    /// Two scrapes of the controller's `/metrics` during training parse as Prometheus text, and
    /// the commit and sample counters move between them; members by state counts the workers;
    /// each worker's own `/metrics` counts its steps and exchange bytes; the listener is
    /// read-only; a controller that stops removes its `http.address`.
    @Test func metricsMoveWhileTraining() async throws {
        try await withProcesses("metrics") { directory, processes in
            try await Self.prepare(directory, stages: 1, replicas: 2)
            let cluster = try await ClusterHarness.start(in: directory, processes: processes, arguments: ["--http", "127.0.0.1:0"])
            let http = try await Self.address(of: cluster.controller, in: directory.appendingPathComponent("controller"))
            #expect(cluster.controller.stderr.contains("dashboard at http://\(http)/ · metrics at http://\(http)/metrics"))
            for name in ["w1", "w2"] { try cluster.join(name) }

            try await cluster.waitForSteps(5)
            let first = try await Self.scrape(http)
            try await cluster.waitForSteps(cluster.ledger().count + 5)
            let second = try await Self.scrape(http)

            for metric in ["elastic_training_commits_total", "elastic_training_samples_total", "elastic_training_committed_steps",
                           "elastic_exchange_sent_bytes_total", "elastic_training_step_duration_seconds_count"] {
                let (a, b) = (first.value(metric) ?? -1, second.value(metric) ?? -1)
                #expect(a >= 0 && b > a, "\(metric) did not move between scrapes: \(a) then \(b)")
            }
            #expect(first.families["elastic_training_commits_total"]?.type == "counter")
            #expect(first.families["elastic_training_step_duration_seconds"]?.type == "histogram")
            #expect(second.value("elastic_members", ["state": "alive"]) == 2)
            #expect(second.value("elastic_members", ["state": "dead"]) == 0)
            #expect(second.value("elastic_training_phase", ["phase": "running"]) == 1)
            #expect(second.value("elastic_training_total_steps") == 2000)
            #expect((second.value("elastic_training_samples_total") ?? 0) == 256 * (second.value("elastic_training_commits_total") ?? -1))
            #expect((second.value("elastic_generation") ?? 0) >= 2)
            #expect((second.value("elastic_exchange_compression_ratio") ?? 0) > 0.99, "no compression: ratio 1")

            for worker in ["w1", "w2"] {
                let address = try await Self.address(of: nil, in: directory.appendingPathComponent(worker))
                let metrics = try await Self.scrape(address)
                let node = ["node": worker]
                #expect((metrics.value("elastic_worker_steps_total", node) ?? 0) >= 5, "\(worker): \(metrics.samples("elastic_worker_steps_total"))")
                #expect((metrics.value("elastic_worker_exchange_sent_bytes_total", node) ?? 0) > 0)
                #expect((metrics.value("elastic_worker_step_compute_seconds_count", node) ?? 0) >= 5)
                #expect(metrics.value("elastic_worker_stage", node) == 0)
            }

            // The dashboard's data names the plan's workers.
            let state = try await HTTPProbe.request("GET", "/api/state", at: http)
            #expect(state.status == 200 && state.headers["content-type"] == "application/json")
            let observation = try JSONDecoder().decode(ControllerObservation.self, from: Data(state.body))
            #expect(Set(observation.training?.plan?.stages.flatMap(\.nodes) ?? []) == ["w1", "w2"])
            #expect((observation.training?.curve.count ?? 0) >= 10)

            // Read-only, and only what exists.
            #expect(try await HTTPProbe.request("POST", "/metrics", at: http).status == 405)
            #expect(try await HTTPProbe.request("DELETE", "/api/state", at: http).status == 405)
            #expect(try await HTTPProbe.request("GET", "/admin", at: http).status == 404)

            try await cluster.stopController()
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("controller/http.address").path))
        }
    }

    /// A worker killed mid-training makes one recovery: counted and timed in `/metrics`,
    /// explained in `/api/state` (its reason names the lost worker), ended by a committed step;
    /// the spare that took the slot counts the state it copied.
    @Test func aRecoveryIsCountedAndExplained() async throws {
        try await withProcesses("recovery") { directory, processes in
            try await Self.prepare(directory, stages: 1, replicas: 2)
            let cluster = try await ClusterHarness.start(in: directory, processes: processes, arguments: ["--http", "127.0.0.1:0"])
            let http = try await Self.address(of: cluster.controller, in: directory.appendingPathComponent("controller"))
            try cluster.join("w1")
            let victim = try cluster.join("w2")
            try await cluster.waitForSteps(3)
            try cluster.join("w3")
            try await waitUntil("w3 to be a spare") {
                let state = try await HTTPProbe.request("GET", "/api/state", at: http)
                let observation = try JSONDecoder().decode(ControllerObservation.self, from: Data(state.body))
                return observation.training?.plan?.spares == ["w3"]
            }
            // (Growing from 1×1 to 1×2 while step 0 ran may have been a recovery already.)
            let before = try await Self.scrape(http)
            let earlier = before.value("elastic_recoveries_total") ?? -1

            victim.signal(SIGKILL)
            _ = try await victim.waitForExit(deadline: .seconds(10))
            let killedAt = cluster.ledger().count
            try await cluster.waitForSteps(killedAt + 3, deadline: .seconds(60))

            let after = try await Self.scrape(http)
            #expect(after.value("elastic_recoveries_total") == earlier + 1)
            #expect(after.value("elastic_recovery_duration_seconds_count") == earlier + 1)
            #expect(after.value("elastic_recovering") == 0)
            #expect(after.value("elastic_members", ["state": "dead"]) == 1)
            #expect(after.value("elastic_members", ["state": "alive"]) == 2)
            let state = try await HTTPProbe.request("GET", "/api/state", at: http)
            let observation = try JSONDecoder().decode(ControllerObservation.self, from: Data(state.body))
            let recoveries = observation.training?.recoveries ?? []
            #expect(Double(recoveries.count) == earlier + 1 && recoveries.last?.reason.contains("w2") == true, "\(recoveries)")
            #expect(recoveries.last.map { $0.step != nil && $0.step! >= $0.fromStep && $0.fromStep >= killedAt - 1 && $0.seconds > 0 } == true, "\(recoveries)")
            #expect(Set(observation.training?.plan?.stages.flatMap(\.nodes) ?? []) == ["w1", "w3"])
            #expect(observation.events.contains { $0.kind == "died" && $0.text.contains("w2") })
            #expect(observation.events.contains { $0.kind == "training" && $0.text.hasPrefix("recovered") })
            let spare = try await Self.scrape(try await Self.address(of: nil, in: directory.appendingPathComponent("w3")))
            #expect((spare.value("elastic_worker_state_copy_received_bytes_total", ["node": "w3"]) ?? 0) > 0)
        }
    }

    /// Headless Chromium renders the dashboard of a 2×2 cluster mid-training: the plan grid has
    /// 2×2 slot cells naming the four real workers (alive), the loss curve has one point per
    /// step committed when the page was read, the event log is filled, and a screenshot is a
    /// PNG of the window's size that holds much more than a blank page.
    @Test func dashboardRendersInChromium() async throws {
        _ = try Chromium.binary()
        try await withProcesses("dashboard") { directory, processes in
            try await Self.prepare(directory, stages: 2, replicas: 2)
            let cluster = try await ClusterHarness.start(in: directory, processes: processes, arguments: ["--http", "127.0.0.1:0"])
            let http = try await Self.address(of: cluster.controller, in: directory.appendingPathComponent("controller"))
            let workers = ["w1", "w2", "w3", "w4"]
            for name in workers { try cluster.join(name) }
            try await cluster.waitForSteps(10)

            let before = cluster.ledger().count
            let run = try await Chromium.run(["--virtual-time-budget=3000", "--dump-dom", "http://\(http)/"], in: directory)
            let after = cluster.ledger().count
            try #require(run.status == 0, "chromium exited with \(run.status): \(run.stderr.suffix(3000))")
            let dom = run.stdout

            #expect(Self.attribute("data-updates", ofTag: "body", in: dom).flatMap { Int($0) }.map { $0 >= 1 } == true, "the page never drew /api/state")
            #expect(Self.attribute("data-stages", ofID: "plan-grid", in: dom) == "2")
            #expect(Self.attribute("data-replicas", ofID: "plan-grid", in: dom) == "2")
            let cells = Self.matches(#"<td class="slot state-[a-z]+" data-node="([^"]+)" data-stage="(\d+)" data-replica="(\d+)" data-state="([a-z]+)""#, in: dom)
            #expect(cells.count == 4, "plan cells: \(cells)")
            #expect(Set(cells.map { $0[0] }) == Set(workers), "the grid names \(cells.map { $0[0] })")
            #expect(Set(cells.map { "\($0[1]),\($0[2])" }) == ["0,0", "0,1", "1,0", "1,1"])
            #expect(cells.allSatisfy { $0[3] == "alive" }, "\(cells)")

            let points = Int(Self.attribute("data-points", ofID: "loss-curve", in: dom) ?? "") ?? -1
            #expect(points >= before && points <= after, "the curve has \(points) points; \(before)…\(after) steps were committed while the page was read")
            let polyline = Self.matches(#"<polyline points="([^"]*)""#, in: dom).first?.first ?? ""
            #expect(polyline.split(separator: " ").count == points, "the polyline draws \(polyline.split(separator: " ").count) of \(points) points")
            #expect(Int(Self.attribute("data-count", ofID: "events", in: dom) ?? "") ?? 0 >= 4, "the event log shows the joins")
            #expect(Int(Self.attribute("data-total", ofID: "progress", in: dom) ?? "") == 3000)

            let shot = directory.appendingPathComponent("dashboard.png")
            let blank = directory.appendingPathComponent("blank.png")
            let screenshot = try await Chromium.run(["--virtual-time-budget=3000", "--window-size=1280,1000", "--screenshot=\(shot.path)", "http://\(http)/"], in: directory)
            let empty = try await Chromium.run(["--window-size=1280,1000", "--screenshot=\(blank.path)", "about:blank"], in: directory)
            #expect(screenshot.status == 0 && empty.status == 0, "\(screenshot.stderr.suffix(2000))\n\(empty.stderr.suffix(2000))")
            let image = try [UInt8](Data(contentsOf: shot))
            let blankImage = try [UInt8](Data(contentsOf: blank))
            let size = pngSize(image)
            #expect(size?.width == 1280 && size?.height == 1000, "the screenshot is not a 1280×1000 PNG: \(String(describing: size))")
            #expect(image.count > 4 * blankImage.count && image.count > 20_000,
                    "the screenshot (\(image.count) bytes) is not much more than a blank page (\(blankImage.count) bytes)")
        }
    }

    /// An address given with --http that is taken stops the controller with one clear error
    /// (and no address file); the default address taken only turns the listener off.
    @Test func aTakenAddressIsAnErrorOnlyWhenAskedFor() async throws {
        try await withProcesses("taken") { directory, processes in
            _ = try await CLI.run(["certs", "init", "--dir", "ctl"], in: directory)
            let held = try LoopbackListener(port: 0)
            defer { held.close() }
            let result = try await CLI.run(["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl", "--http", "127.0.0.1:\(held.port)"], in: directory, deadline: .seconds(30))
            #expect(result.status != 0)
            let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") }
            #expect(errors.count == 1 && errors[0].contains("cannot serve HTTP on 127.0.0.1:\(held.port): the address is in use"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("ctl/controller.address").path))

            // The default (127.0.0.1:9400): held by this test, or by someone else; taken either way.
            let defaultHeld = try? LoopbackListener(port: 9400)
            defer { defaultHeld?.close() }
            let controller = try processes.spawn(name: "controller", ["controller", "--listen", "127.0.0.1:0", "--data-dir", "ctl"])
            try await waitUntil("the controller to say it runs without the dashboard") {
                if !controller.process.isRunning { throw HarnessError("the controller exited: \(controller.stderr)") }
                return controller.stderr.contains("no dashboard or metrics: cannot serve HTTP on 127.0.0.1:9400: the address is in use")
            }
            if defaultHeld != nil {
                #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("ctl/http.address").path))
            }
            controller.signal(SIGTERM)
            #expect(try await controller.waitForExit(deadline: .seconds(15)) == 0)
        }
    }

    // MARK: - Helpers

    /// W1 data (4096 samples) and a job of 2000 (1×2) or 3000 steps: long enough that it runs
    /// throughout the test, which ends the processes.
    static func prepare(_ directory: URL, stages: Int, replicas: Int) async throws {
        let generated = try await CLI.run(["data", "generate", "w1", "--out", "data", "--samples", "4096", "--shards", "2"], in: directory)
        guard generated.status == 0 else { throw HarnessError("data generate failed: \(generated.stderr)") }
        try writeJSON(w1Job(stages: stages, replicas: replicas, steps: stages == 1 ? 2000 : 3000), to: directory.appendingPathComponent("job.json"))
    }

    /// Waits for `<directory>/http.address` and returns it.
    static func address(of process: SpawnedProcess?, in directory: URL) async throws -> String {
        let file = directory.appendingPathComponent("http.address")
        try await waitUntil("\(file.path)") {
            if let process, !process.process.isRunning { throw HarnessError("\(process.name) exited: \(process.stderr)") }
            return FileManager.default.fileExists(atPath: file.path)
        }
        return try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func scrape(_ address: String) async throws -> PrometheusText {
        let response = try await HTTPProbe.request("GET", "/metrics", at: address)
        guard response.status == 200 else { throw HarnessError("GET http://\(address)/metrics: \(response.status) \(response.text)") }
        guard response.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true else {
            throw HarnessError("GET /metrics: content type \(response.headers["content-type"] ?? "none")")
        }
        return try PrometheusText.parse(response.text)
    }

    /// The capture groups of every match of `pattern`.
    static func matches(_ pattern: String, in text: String) -> [[String]] {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        let range = NSRange(text.startIndex..., in: text)
        return regex.matches(in: text, range: range).map { match in
            (1..<match.numberOfRanges).map { index in
                Range(match.range(at: index), in: text).map { String(text[$0]) } ?? ""
            }
        }
    }

    static func attribute(_ name: String, ofID id: String, in dom: String) -> String? {
        guard let tag = matches(#"(<[a-z]+\b[^>]*\bid="\#(id)"[^>]*>)"#, in: dom).first?.first else { return nil }
        return matches(#"\b\#(name)="([^"]*)""#, in: tag).first?.first
    }

    static func attribute(_ name: String, ofTag tagName: String, in dom: String) -> String? {
        guard let tag = matches(#"(<\#(tagName)\b[^>]*>)"#, in: dom).first?.first else { return nil }
        return matches(#"\b\#(name)="([^"]*)""#, in: tag).first?.first
    }
}

/// A listening TCP socket on 127.0.0.1 that holds a port for a test.
final class LoopbackListener {
    let fd: Int32
    let port: Int

    init(port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket() failed: errno \(errno)") }
        // As the controller does: a port in TIME_WAIT is free, one with a listener is not.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 1) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw HarnessError("cannot listen on 127.0.0.1:\(port): errno \(code)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: actual.sin_port))
    }

    func close() { Glibc.close(fd) }
}
