import { IServerInfo } from './api';

/** The Python that reaches a server the hub knows, for a notebook cell (paraconnect.Server.get). */
export function notebookCode(s: IServerInfo): string {
  const lines = ['import paraconnect as pc', '', `srv = pc.Server.get(${JSON.stringify(s.id)})`];
  if (s.kind === 'builtin') {
    lines.push('srv.view()  # the live picture; drag to rotate, wheel to zoom');
  } else if (s.kind === 'pvserver') {
    lines.push('print(srv.note)  # how pvpython or the ParaView GUI connects');
  } else {
    lines.push("srv.local  # 127.0.0.1:PORT: point the program's client here");
  }
  return lines.join('\n');
}

/** `host`, `port` of the server's local endpoint (127.0.0.1:PORT), or null before it has one. */
function endpoint(s: IServerInfo): [string, number] | null {
  const at = s.local?.lastIndexOf(':') ?? -1;
  return s.local && at > 0 ? [s.local.slice(0, at), Number(s.local.slice(at + 1))] : null;
}

/**
 * For a pvserver with a local endpoint: the line that connects pvpython (or ParaView's Python
 * shell) to it, and the ParaView GUI's command line. Not `pvpython --url=…`: pvpython 5.11
 * accepts that option and ignores it (it stays on its built-in session; a test runs the line
 * this returns in a real pvpython). Null for other kinds or before it connects.
 */
export function paraviewLines(s: IServerInfo): { python: string; gui: string } | null {
  const at = endpoint(s);
  if (s.kind !== 'pvserver' || !at) {
    return null;
  }
  const [host, port] = at;
  const cid = s.connect_id ? ` --connect-id=${s.connect_id}` : '';
  return {
    python: `Connect(${JSON.stringify(host)}, ${port})`,
    gui: `paraview --server-url=cs://${host}:${port}${cid}`
  };
}
