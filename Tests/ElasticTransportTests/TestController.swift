import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import Logging
import ServiceLifecycle
import X509
@testable import ElasticServices

/// Log lines kept in memory; printed only when a test wants them (on failure).
final class LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var text: String { lock.withLock { lines.joined(separator: "\n") } }
    func contains(_ fragment: String) -> Bool { lock.withLock { lines.contains { $0.contains(fragment) } } }

    func logger(_ label: String) -> Logger {
        Logger(label: label) { label in CaptureHandler(label: label, capture: self) }
    }

    private struct CaptureHandler: LogHandler {
        let label: String
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            capture.append("\(event.level) \(label): \(event.message)")
        }
    }
}

/// A controller running in this process on a loopback port, in a temporary data dir, stopped
/// through the same graceful shutdown SIGTERM triggers.
struct TestController {
    let endpoint: Endpoint
    let dataDirectory: URL
    let caHash: String
    let log: LogCapture

    var admin: AdminClient { get throws { try AdminClient(dataDirectory: dataDirectory, controller: endpoint) } }


    var authority: CertificateAuthority {
        get throws {
            let pki = PKIFiles.controllerDirectory(dataDirectory: dataDirectory)
            return CertificateAuthority(identity: try PKIFiles.readIdentity(certificate: pki.appendingPathComponent(PKIFiles.caCertificate), key: pki.appendingPathComponent(PKIFiles.caKey)))
        }
    }

    /// Timeouts long enough that a loaded machine never declares a healthy in-process worker
    /// dead: these tests are about TLS and tokens, not failure detection.
    static var patientSettings: Membership.Settings {
        var settings = Membership.Settings()
        settings.suspectAfter = .seconds(5)
        settings.deadTimeout = .seconds(10)
        settings.reconnectGrace = .seconds(5)
        return settings
    }

    /// Runs `body` against a fresh controller; `prepare` may edit the data dir before it starts.
    static func with<T>(
        settings: Membership.Settings = TestController.patientSettings,
        prepare: (URL) throws -> Void = { _ in },
        _ body: (TestController) async throws -> T
    ) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("elastic-test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let created = try ClusterPKI.initialize(dataDirectory: directory, alternativeNames: [], force: false)
        try prepare(directory)
        let log = LogCapture()
        var configuration = ControllerConfiguration(listen: Endpoint(host: "127.0.0.1", port: 0), dataDirectory: directory)
        configuration.membership = settings
        let (bound, boundContinuation) = AsyncStream<Endpoint>.makeStream()
        let service = ControllerService(configuration: configuration, logger: log.logger("controller")) { endpoint in
            boundContinuation.yield(endpoint)
            boundContinuation.finish()
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [.init(service: service)], logger: log.logger("group")))
        let task = Task { try await group.run() }
        do {
            var iterator = bound.makeAsyncIterator()
            guard let endpoint = await iterator.next() else {
                throw ElasticError("the test controller did not start: \(log.text)")
            }
            let controller = TestController(endpoint: endpoint, dataDirectory: directory, caHash: created.caHash, log: log)
            let result = try await body(controller)
            await group.triggerGracefulShutdown()
            try await task.value
            return result
        } catch {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            print("controller log:\n\(log.text)")
            throw error
        }
    }

    /// Polls `condition` until it holds or `deadline` passes.
    func waitUntil(_ what: String, deadline: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws {
        let clock = ContinuousClock()
        let end = clock.now + deadline
        while clock.now < end {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ElasticError("timed out after \(deadline.shortDescription) waiting for \(what)")
    }
}
