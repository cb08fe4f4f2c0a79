import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ISignal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { HubModel } from './model';

/**
 * The parts of a JupyterLab notebook panel the panel uses. Typed here, not imported from
 * @jupyterlab/notebook: that package is not among the extension's dependencies (the npm
 * registry reachable here lacks versions of its dependency tree), and these few members are
 * stable across JupyterLab 4.
 */
interface INotebookPanelLike extends Widget {
  context: { path: string; ready: Promise<void> };
  content: {
    activeCellIndex: number;
    model: {
      contentChanged: ISignal<unknown, void>;
      sharedModel: {
        cells: { cell_type: string; getSource(): string }[];
        insertCell(index: number, cell: { cell_type: 'code'; source: string }): unknown;
      };
    } | null;
  };
}

function asNotebook(widget: Widget | null): INotebookPanelLike | null {
  const nb = widget as INotebookPanelLike | null;
  return nb && nb.hasClass('jp-NotebookPanel') && nb.content?.model ? nb : null;
}

// `Session("cfd-run")`, `Session.create("cfd-run", …)`, `Session(name="cfd-run")` and any
// `session="cfd-run"` keyword (connect_reverse, the widgets).
const SESSION_NAMES = [
  /\bSession(?:\.create)?\(\s*(?:name\s*=\s*)?(["'])([^"'\n]+)\1/g,
  /\bsession\s*=\s*(["'])([^"'\n]+)\1/g
];

/** The session names a notebook's code cells mention, in the order they first appear. */
export function sessionsNamedIn(sources: string[]): string[] {
  const found: { at: number; name: string }[] = [];
  sources.forEach((source, cell) => {
    for (const re of SESSION_NAMES) {
      for (const m of source.matchAll(re)) {
        found.push({ at: cell * 1e9 + (m.index ?? 0), name: m[2] });
      }
    }
  });
  found.sort((a, b) => a.at - b.at);
  return [...new Set(found.map(f => f.name))];
}

/**
 * The notebook side: which notebook is active (so the panel's session follows it: the hub does
 * not know which session a kernel uses, the notebook's code says it), and inserting a cell.
 */
export class NotebookBridge {
  constructor(
    private app: JupyterFrontEnd,
    private model: HubModel
  ) {
    app.shell.currentChanged?.connect(() => this._track(), this);
    model.changed.connect(() => this._follow(), this);
    this._track();
  }

  /** The notebook the user last worked in (the panel itself is not in the main area). */
  get notebook(): INotebookPanelLike | null {
    return this._notebook && !this._notebook.isDisposed ? this._notebook : null;
  }

  /** Insert a code cell below the active one of the last active notebook, and select it. */
  insert(source: string): boolean {
    const nb = this.notebook;
    const model = nb?.content.model;
    if (!nb || !model) {
      Notification.warning('Open a notebook first: the code goes into the active notebook', {
        autoClose: 5000
      });
      return false;
    }
    const at = Math.min(nb.content.activeCellIndex + 1, model.sharedModel.cells.length);
    model.sharedModel.insertCell(at, { cell_type: 'code', source });
    nb.content.activeCellIndex = at;
    this.app.shell.activateById(nb.id);
    return true;
  }

  private _track(): void {
    const nb = asNotebook(this.app.shell.currentWidget);
    if (!nb || nb === this._notebook) {
      if (nb === null && this.app.shell.currentWidget && this._notebook) {
        // Another document (a file, a terminal) is active: no notebook's session to follow.
        this._setNotebook(null);
      }
      return;
    }
    this._setNotebook(nb);
  }

  private _setNotebook(nb: INotebookPanelLike | null): void {
    this._notebook?.content.model?.contentChanged.disconnect(this._read, this);
    this._notebook = nb;
    nb?.content.model?.contentChanged.connect(this._read, this);
    // Its cells arrive from disk after the widget exists.
    void nb?.context.ready.then(() => this._read());
    this._read();
  }

  private _read(): void {
    const cells = this.notebook?.content.model?.sharedModel.cells ?? [];
    const names = sessionsNamedIn(
      cells.filter(c => c.cell_type === 'code').map(c => c.getSource())
    );
    if (names.join('\n') !== this._names.join('\n')) {
      this._names = names;
    }
    this._follow();
  }

  private _follow(): void {
    this.model.follow(this.notebook?.context.path ?? null, this._names);
  }

  private _notebook: INotebookPanelLike | null = null;
  private _names: string[] = [];
}
