// The floor for `npm run bench:extproc`: a bare grpc-js ext_proc server that carries the same
// messages as the sidecar in FULL_DUPLEX_STREAMED mode (holds the headers reply until the
// request body ends, routes to a fixed engine, echoes every chunk) and does nothing else.
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { ConnectionRotation, STREAMS_PER_CONNECTION } from "../../src/extproc/connection-rotation.js";
import { DESTINATION_HEADER } from "../../src/protocol.js";
import { headersReply, streamedBodyReply, trailersReply, type ProcessingRequest, type ProcessingResponse } from "../../src/extproc/messages.js";
import { ExternalProcessorService } from "../../src/gen/envoy/service/ext_proc/v3/external_processor.js";

const ENGINE = "127.0.0.1:1";

// Node's HTTP/2 server needs the same connection retirement as the sidecar to survive Envoy's resets.
const rotation = new ConnectionRotation(STREAMS_PER_CONNECTION, () => console.error("connection rotation unavailable"));

function process(call: ServerDuplexStream<ProcessingRequest, ProcessingResponse>): void {
  rotation.track(call);
  const held: Buffer[] = [];
  const route = () =>
    call.write(headersReply("request", { set: { [DESTINATION_HEADER]: ENGINE } }, { "envoy.lb": { [DESTINATION_HEADER]: ENGINE } }));
  call.on("data", (message: ProcessingRequest) => {
    if (message.requestHeaders) {
      if (message.requestHeaders.endOfStream) route();
    } else if (message.requestBody) {
      held.push(message.requestBody.body);
      if (message.requestBody.endOfStream) {
        route();
        call.write(streamedBodyReply("request", Buffer.concat(held), true));
      }
    } else if (message.requestTrailers) {
      call.write(trailersReply("request"));
    } else if (message.responseHeaders) {
      call.write(headersReply("response"));
    } else if (message.responseBody) {
      call.write(streamedBodyReply("response", message.responseBody.body, message.responseBody.endOfStream));
    } else if (message.responseTrailers) {
      call.write(trailersReply("response"));
    }
  });
  call.on("end", () => call.end());
  call.on("error", () => undefined);
}

// The same HTTP/2 session setting as the sidecar; without it both fail under this load.
const server = new Server();
server.addService(ExternalProcessorService, { process });
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  console.log(JSON.stringify({ msg: "floor serving", extproc: port }));
});
