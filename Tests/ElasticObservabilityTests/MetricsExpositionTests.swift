@testable import ElasticServices
import ElasticTestSupport
import Foundation
import Prometheus
import Testing

/// The controller's and the worker's metrics as Prometheus text, and the dashboard's JSON, from
/// made-up snapshots: no process, no socket.
@Suite struct MetricsExpositionTests {
    typealias O = ControllerObservation

    static func observation(curve: [(Int, Double, Double)], members: [String: String] = ["w1": "alive", "w2": "alive", "w3": "dead"],
                            recoveries: [O.Recovery] = [], checkpoints: [O.Checkpoint] = [], sent: UInt64 = 0, startedAt: Double = 1,
                            health: O.CheckpointHealth? = nil, pauses: Int = 0) -> O {
        let training = O.Training(
            job: "w1", phase: "running", detail: "", startedAt: startedAt, committedSteps: curve.count,
            nextStep: (curve.last?.0 ?? -1) + 1, totalSteps: 100, batch: 256, samplesPerSecond: 1000, loss: curve.last?.1, codec: "none",
            plan: O.Plan(generation: 3, replicas: 2, stages: [O.Stage(firstLayer: 0, lastLayer: 4, nodes: ["w1", "w2"])], spares: []),
            curve: curve.map { O.Point(step: $0.0, loss: $0.1, at: $0.2) }, recoveries: recoveries, recovering: nil,
            traffic: [O.Traffic(node: "w1", bytesSent: 100, bytesReceived: 100, uncompressedBytes: 400)],
            trafficTotal: O.Traffic(node: "", bytesSent: sent, bytesReceived: sent, uncompressedBytes: sent * 4),
            checkpoints: checkpoints, checkpointHealth: health, replans: 0, rolledBackSteps: 0)
        return O(generation: 3, uptime: 10, pauses: pauses, pausedSeconds: Double(pauses) * 6, members: members.sorted { $0.key < $1.key }.map { O.Member(node: $0.key, state: $0.value, incarnation: 1, address: "", lastHeardMs: 0, note: "") },
                 training: training, events: [O.Event(time: "2025-01-01T00:00:00.000Z", kind: "joined", text: "w1 joined")])
    }

    @Test func everyFamilyHasHelpAndTypeAndParsesStrictly() throws {
        let metrics = ControllerMetrics(registry: PrometheusCollectorRegistry())
        let text = metrics.scrape(Self.observation(curve: [(0, 2.3, 1.0), (1, 2.2, 1.5)]))
        let parsed = try PrometheusText.parse(text)
        let catalog = Set(MetricCatalog.all.map(\.name))
        #expect(!parsed.families.isEmpty)
        for family in parsed.families.values {
            #expect(catalog.contains(family.name), "\(family.name) is not in the catalog (docs/observability.md lists the catalog)")
            #expect(family.help?.isEmpty == false, "\(family.name) has no HELP")
        }
        #expect(parsed.value("elastic_members", ["state": "alive"]) == 2)
        #expect(parsed.value("elastic_members", ["state": "dead"]) == 1)
        #expect(parsed.value("elastic_members", ["state": "suspect"]) == 0)
        #expect(parsed.value("elastic_training_phase", ["phase": "running"]) == 1)
        #expect(parsed.value("elastic_training_phase", ["phase": "idle"]) == 0)
        #expect(parsed.value("elastic_generation") == 3)
        #expect(parsed.value("elastic_training_committed_steps") == 2)
        #expect(parsed.value("elastic_exchange_compression_ratio") == 4)
    }

    @Test func countersMoveByWhatHappenedSinceTheLastScrape() throws {
        let metrics = ControllerMetrics(registry: PrometheusCollectorRegistry())
        let first = try PrometheusText.parse(metrics.scrape(Self.observation(curve: [(0, 2.3, 1.0), (1, 2.2, 1.5)], sent: 1000)))
        #expect(first.value("elastic_training_commits_total") == 2)
        #expect(first.value("elastic_training_samples_total") == 512)
        #expect(first.value("elastic_training_step_duration_seconds_count") == 1)
        #expect(first.value("elastic_exchange_sent_bytes_total") == 1000)
        // The same snapshot again changes no counter.
        let again = try PrometheusText.parse(metrics.scrape(Self.observation(curve: [(0, 2.3, 1.0), (1, 2.2, 1.5)], sent: 1000)))
        #expect(again.value("elastic_training_commits_total") == 2)
        // A rollback to step 1 and two redone steps, a recovery and a checkpoint.
        let recovery = O.Recovery(reason: "w3 died", fromStep: 2, step: 2, startedAt: 1.6, seconds: 1.2)
        let checkpoint = O.Checkpoint(step: 2, path: "/c/step-2", rawBytes: 4000, storedBytes: 3000, seconds: 0.3, committedAt: 3.0)
        let later = try PrometheusText.parse(metrics.scrape(Self.observation(
            curve: [(0, 2.3, 1.0), (1, 2.25, 2.8), (2, 2.1, 3.1)], recoveries: [recovery], checkpoints: [checkpoint], sent: 1500)))
        #expect(later.value("elastic_training_commits_total") == 4)
        #expect(later.value("elastic_training_samples_total") == 1024)
        #expect(later.value("elastic_training_committed_steps") == 3)
        #expect(later.value("elastic_recoveries_total") == 1)
        #expect(later.value("elastic_recovery_duration_seconds_count") == 1)
        #expect(later.value("elastic_recovery_duration_seconds_sum").map { abs($0 - 1.2) < 1e-6 } == true)
        #expect(later.value("elastic_checkpoints_total") == 1)
        #expect(later.value("elastic_checkpoint_stored_bytes") == 3000)
        #expect(later.value("elastic_exchange_sent_bytes_total") == 1500)
        #expect(later.value("elastic_training_loss") == 2.1)
        // A new job: its totals start again, the counters still only grow.
        let next = try PrometheusText.parse(metrics.scrape(Self.observation(curve: [(0, 2.3, 9.0)], sent: 200, startedAt: 8)))
        #expect(next.value("elastic_exchange_sent_bytes_total") == 1700)
        #expect(next.value("elastic_training_commits_total") == 5)
    }

    @Test func pausesAndFailingCheckpointsAreCounted() throws {
        let metrics = ControllerMetrics(registry: PrometheusCollectorRegistry())
        let failing = O.CheckpointHealth(newestStep: 20, newestAgeSeconds: 41.5, consecutiveFailures: 2, failures: 2,
                                         lastFailureStep: 60, lastFailure: "w2 could not write stage 1: no space left on device")
        let first = try PrometheusText.parse(metrics.scrape(Self.observation(curve: [(0, 2.3, 1.0)], health: failing, pauses: 1)))
        #expect(first.value("elastic_controller_pauses_total") == 1)
        #expect(first.value("elastic_controller_paused_seconds_total") == 6)
        #expect(first.value("elastic_checkpoint_failures_total") == 2)
        #expect(first.value("elastic_checkpoint_consecutive_failures") == 2)
        #expect(first.value("elastic_checkpoint_newest_age_seconds") == 41.5)
        // Space freed: the next checkpoint works; the counters keep what happened.
        let working = O.CheckpointHealth(newestStep: 80, newestAgeSeconds: 0.5, consecutiveFailures: 0, failures: 2, lastFailureStep: 60, lastFailure: "no space")
        let later = try PrometheusText.parse(metrics.scrape(Self.observation(curve: [(0, 2.3, 1.0)], health: working, pauses: 2)))
        #expect(later.value("elastic_controller_pauses_total") == 2)
        #expect(later.value("elastic_controller_paused_seconds_total") == 12)
        #expect(later.value("elastic_checkpoint_failures_total") == 2)
        #expect(later.value("elastic_checkpoint_consecutive_failures") == 0)
        #expect(later.value("elastic_checkpoint_newest_age_seconds") == 0.5)
    }

    @Test func workerMetricsCarryTheNode() throws {
        let metrics = WorkerMetrics(registry: PrometheusCollectorRegistry(), node: "w7")
        metrics.stepComputed(took: .milliseconds(30), sent: 1000, received: 900, uncompressed: 4000)
        metrics.stepComputed(took: .milliseconds(40), sent: 1000, received: 900, uncompressed: 4000)
        metrics.checkpointWritten(rawBytes: 100, storedBytes: 80, took: .milliseconds(5))
        metrics.assigned(generation: 4, stage: 1)
        let parsed = try PrometheusText.parse(metrics.scrape())
        let node = ["node": "w7"]
        #expect(parsed.value("elastic_worker_steps_total", node) == 2)
        #expect(parsed.value("elastic_worker_exchange_sent_bytes_total", node) == 2000)
        #expect(parsed.value("elastic_worker_step_compute_seconds_count", node) == 2)
        #expect(parsed.value("elastic_worker_checkpoint_stored_bytes_total", node) == 80)
        #expect(parsed.value("elastic_worker_stage", node) == 1)
        #expect(parsed.value("elastic_worker_generation", node) == 4)
        for family in parsed.families.values { #expect(family.help?.isEmpty == false, "\(family.name) has no HELP") }
    }

    @Test func theDocsListEveryMetric() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/observability.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        for entry in MetricCatalog.all {
            #expect(text.contains("`\(entry.name)"), "docs/observability.md does not list \(entry.name)")
        }
    }

    @Test func theParserRefusesWhatPrometheusWould() {
        for bad in [
            "x 1\n",  // no TYPE
            "# TYPE x gauge\nx 1",  // no final line feed
            "# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",  // a series twice
            "# TYPE x gauge\nx nan\n",  // lowercase NaN
            "# TYPE x counter\nx -1\n",
            "# TYPE x gauge\n# TYPE y gauge\ny 1\nx 1\n",  // not contiguous
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",  // not cumulative
            "# TYPE x gauge\nx{1a=\"1\"} 1\n",
        ] {
            #expect(throws: PrometheusText.ParseError.self, "\(bad)") { try PrometheusText.parse(bad) }
        }
    }

    @Test func theStateJSONRoundTripsWithAMissingLoss() throws {
        let observation = Self.observation(curve: [(0, .nan, 1.0), (1, 2.2, 1.5)])
        let json = observation.json()
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains("[0,null,1]"), "a NaN loss is null in the curve: \(text.prefix(400))")
        let decoded = try JSONDecoder().decode(O.self, from: Data(json))
        #expect(decoded.training?.curve.count == 2)
        #expect(decoded.training?.curve[1] == O.Point(step: 1, loss: 2.2, at: 1.5))
        #expect(decoded.members == observation.members)
    }
}

/// The read-only HTTP listener on a real loopback socket.
@Suite struct StatusHTTPServerTests {
    @Test func getOnlyKnownPaths() async throws {
        let server = try await StatusHTTPServer.bind(Endpoint(host: "127.0.0.1", port: 0))
        let task = Task {
            await server.run(logger: .init(label: "test")) { path in
                path == "/hello" ? .text("hi\n") : nil
            }
        }
        defer {
            server.close()
            task.cancel()
        }
        let address = "127.0.0.1:\(server.address.port)"
        let ok = try await HTTPProbe.request("GET", "/hello?x=1", at: address)
        #expect(ok.status == 200 && ok.text == "hi\n")
        #expect(ok.headers["content-length"] == "3")
        let head = try await HTTPProbe.request("HEAD", "/hello", at: address)
        #expect(head.status == 200 && head.body.isEmpty)
        let missing = try await HTTPProbe.request("GET", "/nope", at: address)
        #expect(missing.status == 404)
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let refused = try await HTTPProbe.request(method, "/hello", at: address)
            #expect(refused.status == 405, "\(method)")
            #expect(refused.headers["allow"] == "GET, HEAD")
        }
    }

    @Test func aTakenAddressIsAClearError() async throws {
        let first = try await StatusHTTPServer.bind(Endpoint(host: "127.0.0.1", port: 0))
        defer { first.close() }
        await #expect(throws: ElasticError.self) {
            _ = try await StatusHTTPServer.bind(Endpoint(host: "127.0.0.1", port: first.address.port))
        }
    }
}
