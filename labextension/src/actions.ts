import { JupyterFrontEnd } from '@jupyterlab/application';
import { Clipboard, Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IAgentCommand, ICert, IFriendIssued, IServerInfo, ISessionInfo } from './api';
import { h } from './dom';
import { HubModel } from './model';
import { NotebookBridge } from './notebook';
import { requestAPI } from './request';
import { notebookCode, paraviewLines } from './snippets';
import { CommandIDs } from './tokens';
import { openView } from './viewtab';

const enc = encodeURIComponent;

/** Run one operation; a failure becomes an error notification with the hub's one line. */
async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (error) {
    Notification.error(`${what}: ${(error as Error).message}`, { autoClose: 8000 });
    return undefined;
  }
}

export interface ILaunch {
  kind: string;
  launcher: string;
  session: string;
  mode: string;
  options: Record<string, unknown>;
  launcher_options: Record<string, unknown>;
  command: string[];
}

/** What the panel and the palette commands do, each one REST call and a model refresh. */
export class Actions {
  constructor(
    readonly model: HubModel,
    readonly notebooks: NotebookBridge | null = null,
    readonly app: JupyterFrontEnd | null = null
  ) {}

  /** A built-in renderer's live picture in a main-area tab. */
  openView(s: IServerInfo): void {
    if (this.app) {
      openView(this.app, s);
    }
  }

  /** A web server's app in a main-area tab (the command, so that one tracker knows every tab). */
  openApp(s: IServerInfo): void {
    void this.app?.commands.execute(CommandIDs.openApp, { id: s.id });
  }

  /** Put the code that reaches server `s` into the active notebook, below its active cell. */
  insertCode(s: IServerInfo): void {
    this.notebooks?.insert(notebookCode(s));
  }

  /** Copy the line that connects pvpython to a pvserver; the toast also gives the GUI's. */
  copyParaview(s: IServerInfo): void {
    const lines = paraviewLines(s);
    if (!lines) {
      return;
    }
    Clipboard.copyToSystem(lines.python);
    Notification.info(
      `Copied: ${lines.python} (for pvpython or ParaView's Python shell; the ParaView GUI: ` +
        `${lines.gui}). pvserver ends when its client leaves: ParaView state is not kept ` +
        'between clients.',
      { autoClose: 8000 }
    );
  }

  async createSession(name: string, key_type: string, days: number, level: string): Promise<void> {
    const info = await attempt('Creating the session failed', () =>
      requestAPI<ISessionInfo>('sessions', {
        method: 'POST',
        body: { name, key_type, days, level }
      })
    );
    if (info) {
      Notification.success(`Session '${info.name}' created`, { autoClose: 4000 });
      this.model.select(info.name);
      await this.model.reload();
    }
  }

  async openSession(name: string): Promise<void> {
    const info = await attempt(`Opening session '${name}' failed`, () =>
      requestAPI<ISessionInfo>(`sessions/${enc(name)}/open`, { method: 'POST' })
    );
    if (info) {
      await this.model.reload();
    }
  }

  async launch(spec: ILaunch): Promise<void> {
    const info = await attempt('Launch failed', () =>
      requestAPI<IServerInfo>('servers', { method: 'POST', body: spec })
    );
    if (info) {
      Notification.info(`Server ${info.id} (${info.kind}) ${info.state}`, { autoClose: 4000 });
      await this.model.reloadServer(info.id);
    }
  }

  async stop(id: string): Promise<void> {
    const info = await attempt(`Stopping ${id} failed`, () =>
      requestAPI<IServerInfo>(`servers/${enc(id)}`, { method: 'DELETE' })
    );
    if (info) {
      await this.model.reloadServer(id);
    }
  }

  async logs(id: string): Promise<void> {
    const text = await attempt(`Reading the logs of ${id} failed`, () =>
      requestAPI<string>(`servers/${enc(id)}/logs?tail=200`)
    );
    if (text !== undefined) {
      const body = new Widget({ node: h('pre', { class: 'pc-logs' }, text || '(no output yet)') });
      await showDialog({
        title: `Logs of ${id}`,
        body,
        buttons: [Dialog.okButton({ label: 'Close' })]
      });
    }
  }

  async agentCommand(
    spec: Pick<ILaunch, 'kind' | 'session' | 'options' | 'command'>
  ): Promise<void> {
    const answer = await attempt('Making an agent command failed', () =>
      requestAPI<IAgentCommand>('servers/agent-command', { method: 'POST', body: spec })
    );
    if (!answer) {
      return;
    }
    Clipboard.copyToSystem(answer.command);
    await this.model.reloadServer(answer.server.id).catch(() => undefined);
    const expires =
      typeof answer.expires === 'number'
        ? new Date(answer.expires * 1000).toLocaleString()
        : answer.expires;
    const body = new Widget({
      node: h(
        'div',
        { class: 'pc-agent-command' },
        h('p', {}, `Copied. Run this on the remote host (the one-time token expires ${expires}):`),
        h('pre', { class: 'pc-logs' }, answer.command)
      )
    });
    await showDialog({
      title: `Start server ${answer.server.id} by hand`,
      body,
      buttons: [Dialog.okButton({ label: 'Close' })]
    });
  }

  async issueFriend(
    session: string,
    name: string,
    passphrase: string,
    days: number,
    unique_id = ''
  ): Promise<ICert | undefined> {
    const issued = await attempt('Issuing the bundle failed', () =>
      requestAPI<IFriendIssued>(`sessions/${enc(session)}/friends`, {
        method: 'POST',
        body: { name, passphrase, days, ...(unique_id ? { unique_id } : {}) }
      })
    );
    if (issued) {
      Notification.success(
        `Bundle for '${name}' issued; download it and send it with the passphrase apart`,
        {
          autoClose: 6000
        }
      );
      await this.model.reloadSession(session);
      return issued.certificate;
    }
    return undefined;
  }

  async download(session: string, cert: ICert): Promise<void> {
    const blob = await attempt('Downloading the bundle failed', () =>
      requestAPI<Blob>(
        `sessions/${enc(session)}/friends/${enc(String(cert.serial))}/bundle`,
        {},
        'blob'
      )
    );
    if (blob) {
      const url = URL.createObjectURL(blob);
      const a = h('a', {
        href: url,
        download: `${session}-${cert.name}.p12`,
        style: 'display: none'
      });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    }
  }

  async revoke(session: string, cert: ICert): Promise<void> {
    const ok = await showDialog({
      title: `Revoke '${cert.name}'?`,
      body: `Certificate ${cert.serial} of session '${session}' is refused from now on; its open connections are closed.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Revoke' })]
    });
    if (!ok.button.accept) {
      return;
    }
    const revoked = await attempt(`Revoking '${cert.name}' failed`, () =>
      requestAPI<ICert[]>(`sessions/${enc(session)}/revoke`, {
        method: 'POST',
        body: { target: String(cert.serial) }
      })
    );
    if (revoked) {
      Notification.warning(
        `Revoked '${cert.name}' (${revoked.length} certificate${revoked.length === 1 ? '' : 's'})`,
        {
          autoClose: 5000
        }
      );
      await this.model.reloadSession(session);
    }
  }
}
