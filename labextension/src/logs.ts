/**
 * An expandable log box for a kernel or job row: a `<pre class="jp-DSSContainers-logs">`
 * that re-reads the logs every few seconds while it is open and on screen. Rows are rebuilt
 * on every refresh of the panel; the box is kept by the panel and moved into the new row,
 * so the text, the scroll position and the timer survive.
 */
import { ApiError, FINAL_JOB_STATES, IJobLogs, IKernelLogs, JobState, requestAPI } from './api';

/** How often an open log box re-reads its logs (ms). */
export const LOG_REFRESH_INTERVAL = 2000;
/** Lines of a kernel's log a box shows. */
export const KERNEL_LOG_TAIL = 200;

const CLS = 'jp-DSSContainers';

/** Reads the logs: `done` says nothing more will come, so the box stops asking. */
type LogSource = () => Promise<{ text: string; append: boolean; done: boolean }>;

export class LogView {
  readonly node: HTMLElement;

  constructor(
    private readonly _read: LogSource,
    private readonly _active: () => boolean
  ) {
    this._pre = document.createElement('pre');
    this._pre.className = `${CLS}-logs`;
    this._status = document.createElement('div');
    this._status.className = `${CLS}-logs-status`;
    this.node = document.createElement('div');
    this.node.className = `${CLS}-logs-box`;
    this.node.append(this._pre, this._status);
    this._status.textContent = 'Loading…';
    void this.refresh();
    this._timer = window.setInterval(() => {
      if (this._active() && !document.hidden && this.node.isConnected) {
        void this.refresh();
      }
    }, LOG_REFRESH_INTERVAL);
  }

  /** A box for a container kernel: the last lines of its container's output. */
  static forKernel(kernelId: string, active: () => boolean): LogView {
    const path = `kernels/${encodeURIComponent(kernelId)}/logs?tail=${KERNEL_LOG_TAIL}`;
    return new LogView(async () => {
      const reply = await requestAPI<IKernelLogs>(path);
      if (reply.error) {
        throw new Error(reply.error);
      }
      return { text: reply.logs, append: false, done: false };
    }, active);
  }

  /** A box for a job: its output chunks, fetched from where the last read ended;
   * `onState` hears the job's state with each read (the row may show an older one). */
  static forJob(
    jobId: string,
    active: () => boolean,
    onState: (state: string) => void = () => undefined
  ): LogView {
    let since = 0;
    return new LogView(async () => {
      const reply = await requestAPI<IJobLogs>(
        `jobs/${encodeURIComponent(jobId)}/logs?since=${since}`
      );
      since = reply.next;
      onState(reply.state);
      return {
        text: reply.output.map(chunk => chunk.text).join(''),
        append: true,
        done: FINAL_JOB_STATES.includes(reply.state as JobState)
      };
    }, active);
  }

  get isDisposed(): boolean {
    return this._timer === null;
  }

  async refresh(): Promise<void> {
    if (this._busy || this.isDisposed) {
      return;
    }
    this._busy = true;
    try {
      const { text, append, done } = await this._read();
      const pre = this._pre;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      if (append) {
        if (text) {
          pre.append(text);
        }
      } else if (pre.textContent !== text) {
        pre.textContent = text;
      }
      this._status.textContent = pre.textContent ? '' : 'No output yet.';
      this._status.removeAttribute('role');
      if (atBottom) {
        pre.scrollTop = pre.scrollHeight;
      }
      if (done) {
        this._stopTimer();
      }
    } catch (error) {
      const status = error instanceof ApiError ? error.status : 0;
      this._status.textContent = error instanceof Error ? error.message : String(error);
      this._status.setAttribute('role', 'alert');
      if (status === 404) {
        this._stopTimer(); // the kernel or job is gone
      }
    } finally {
      this._busy = false;
    }
  }

  dispose(): void {
    this._stopTimer();
    this._timer = null;
    this.node.remove();
  }

  private _stopTimer(): void {
    if (this._timer !== null && this._timer !== 0) {
      window.clearInterval(this._timer);
      this._timer = 0; // stopped, still shown
    }
  }

  private _pre: HTMLPreElement;
  private _status: HTMLElement;
  /** the interval id; 0 once no more reads are due; null once disposed */
  private _timer: number | null;
  private _busy = false;
}
