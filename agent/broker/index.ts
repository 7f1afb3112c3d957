import { createServer, type AddressInfo, type Server } from 'node:net';
import { Aedes } from 'aedes';
import { logger } from '../log';

export interface EmbeddedBrokerOptions {
  /** 0 picks a free port. */
  port?: number;
  host?: string;
}

export interface EmbeddedBroker {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * The embedded broker (aedes, MQTT 3.1.1). Binds to loopback by default: it has no authentication
 * configured, so it must not be reachable from the network unless the operator asks for it.
 */
export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
  const log = logger('broker');
  const host = opts.host ?? '127.0.0.1';
  const aedes = await Aedes.createBroker({ drainTimeout: 30_000 });
  const server: Server = createServer(aedes.handle);
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `port ${opts.port} on ${host} is already in use` : `cannot start the broker: ${err.message}`)));
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  aedes.on('clientError', (client, err) => log.debug({ client: client?.id, err: err.message }, 'client error'));
  log.info({ host, port }, 'embedded broker listening');
  return {
    url: `mqtt://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        aedes.close(() => undefined);
      }),
  };
}
