import ArgumentParser
import ElasticCore
import ElasticServices
import Foundation
import ServiceLifecycle

struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker: join the cluster at HOST:PORT and stay a member until stopped.",
        discussion: """
        The first join needs a token and the CA hash ('elastic token create' prints both); it stores a node \
        certificate in the data dir, and later runs with the same data dir rejoin without a token.
        SIGTERM or SIGINT leave the cluster cleanly.
        Example: elastic join 10.0.0.5:7400 --token abcdef.0123456789abcdef --ca-hash sha256:… --data-dir ./worker-1
        """
    )

    @Argument(help: ArgumentHelp("The controller's address.", valueName: "host:port"))
    var controller: String

    @Option(help: "A bootstrap token <id>.<secret> (first join only).")
    var token: String?

    @Option(help: "The CA hash sha256:<hex> to pin (first join only).")
    var caHash: String?

    @Option(help: "This node's name: lowercase letters, digits and '-' (default: host name and a random suffix).")
    var name: String?

    @Option(name: .customLong("data-dir"), help: "Where this worker keeps its key and certificate.")
    var dataDirectory: String = "./elastic-worker"

    @Option(help: ArgumentHelp("Where the data plane listens for peers (port 0: any free port).", valueName: "host:port"))
    var dataListen: String = "0.0.0.0:0"

    @Option(help: "The host name or address peers dial for the data plane (default: this side's address towards the controller).")
    var dataAdvertise: String?

    @Option(help: "Threads for matrix products (OpenBLAS); 1 suits several workers per host.")
    var computeThreads: Int = 1

    @Option(help: ArgumentHelp("Where to serve this worker's /metrics (default: 127.0.0.1:0, a free loopback port, written to <data-dir>/http.address).", discussion: HTTPOption.help, valueName: "host:port|off"))
    var http: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard Endpoint(parsing: controller) != nil else {
            throw ValidationError("'\(controller)' is not HOST:PORT (for example 10.0.0.5:7400)")
        }
        try HTTPOption.validate(http)
        if let token, case .failure(let error) = BootstrapTokens.parse(token) {
            throw ValidationError(error.explanation)
        }
        if let caHash, !(caHash.hasPrefix("sha256:") && caHash.count == 71 && caHash.dropFirst(7).allSatisfy(\.isHexDigit)) {
            throw ValidationError("--ca-hash must be sha256: followed by 64 hex digits, as printed by 'elastic certs init' or 'elastic certs hash'")
        }
        guard computeThreads >= 1 else { throw ValidationError("--compute-threads must be at least 1") }
        guard Endpoint(parsing: dataListen) != nil else {
            throw ValidationError("--data-listen '\(dataListen)' is not HOST:PORT (for example 0.0.0.0:0)")
        }
        if let name, let problem = NodeID.problem(with: name) {
            throw ValidationError("--name '\(name)': \(problem)")
        }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "elastic.worker")
        let endpoint = Endpoint(parsing: controller)!
        let directory = URL(fileURLWithPath: dataDirectory)
        try DataDirectory.prepare(directory)
        let configuration = try await WorkerConfiguration.prepare(
            controller: endpoint, token: token, caHash: caHash, name: name ?? defaultName(),
            dataDirectory: directory, softwareVersion: Elastic.version, computeThreads: computeThreads, logger: logger)
        var worker = configuration
        worker.dataListen = Endpoint(parsing: dataListen)!
        worker.dataAdvertiseHost = dataAdvertise
        worker.http = HTTPOption.settings(http, default: Endpoint(host: "127.0.0.1", port: 0))
        worker.httpAddressFile = HTTPListenSettings.addressFile(dataDirectory: directory)
        let service = WorkerService(configuration: worker, logger: logger)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    private func defaultName() -> String {
        let host = ProcessInfo.processInfo.hostName.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }
        let base = String(String(host).prefix(40)).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        return "\(base.isEmpty ? "worker" : base)-\(String(UInt16.random(in: 0...UInt16.max), radix: 16))"
    }
}
