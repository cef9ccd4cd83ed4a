/**
 * The "Containers" sidebar: the execution configurations open to the user (with a
 * "New notebook" button each), their running container kernels (state, uptime, live
 * CPU/memory, a Stop button), and jobs. Plain DOM in a Lumino widget; every element a
 * test needs has a stable class name or data attribute (`.jp-DSSContainers-config[data-config]`,
 * `.jp-DSSContainers-new-notebook`, `.jp-DSSContainers-kernel[data-kernel-id][data-state]`,
 * `.jp-DSSContainers-stop`, `.jp-DSSContainers-test[data-config]` and its
 * `.jp-DSSContainers-test-result[data-ok]`, `.jp-DSSContainers-show-logs` and the open
 * `pre.jp-DSSContainers-logs`, `.jp-DSSContainers-job[data-job-id][data-state]`,
 * `.jp-DSSContainers-cancel`, `#jp-DSSContainers-jobs`, `.jp-DSSContainers-empty|error`).
 */
import { ServiceManager } from '@jupyterlab/services';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  FINAL_JOB_STATES,
  IConfig,
  IConfigList,
  IJob,
  IJobList,
  IKernel,
  IKernelList,
  ITestResult,
  requestAPI
} from './api';
import { deathNotifier } from './deaths';
import { containersIcon } from './icon';
import { LogView } from './logs';
import { renderPhases, starting } from './phases';

/** How often the kernel list refreshes while the panel is visible (ms). */
export const REFRESH_INTERVAL = 5000;

const CLS = 'jp-DSSContainers';

/** `h('div', {class: 'x', 'data-y': 'z'}, child, 'text')`: a small element builder. */
function h(
  tag: string,
  attrs: Record<string, string | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined) {
      el.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      el.append(child);
    }
  }
  return el;
}

/** 1536 -> "1.5 KiB" (binary units, like the server's summaries). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** Seconds -> "42 s", "3 min 5 s", "2 h 07 min", "1 d 3 h". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
  }
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function emptyState(text: string, kind = 'empty'): HTMLElement {
  return h('div', { class: `${CLS}-${kind}` }, text);
}

function errorState(error: unknown): HTMLElement {
  const message = error instanceof Error ? error.message : String(error);
  const status = error instanceof ApiError && error.status ? String(error.status) : undefined;
  return h('div', { class: `${CLS}-error`, role: 'alert', 'data-status': status }, message);
}

/** One titled part of the panel, whose body is replaced on each refresh. */
class Section {
  readonly node: HTMLElement;
  readonly body: HTMLElement;
  readonly header: HTMLElement;

  constructor(name: string, title: string) {
    this.header = h('div', { class: `${CLS}-section-header` }, h('h3', {}, title));
    this.body = h('div', { class: `${CLS}-section-body` });
    this.node = h(
      'section',
      { class: `${CLS}-section`, id: `${CLS}-${name}`, 'data-section': name },
      this.header,
      this.body
    );
  }

  show(...children: Node[]): void {
    this.body.replaceChildren(...children);
  }
}

export namespace ContainersPanel {
  export interface IOptions {
    commands: CommandRegistry;
    serviceManager: ServiceManager.IManager;
  }
}

export class ContainersPanel extends Widget {
  constructor(options: ContainersPanel.IOptions) {
    super();
    this._commands = options.commands;
    this._services = options.serviceManager;
    this.id = 'jp-DSSContainers-panel';
    this.addClass(`${CLS}-panel`);
    this.title.icon = containersIcon;
    this.title.caption = 'Containers';

    const refresh = h(
      'button',
      { class: `${CLS}-refresh jp-mod-styled`, title: 'Refresh', type: 'button' },
      'Refresh'
    );
    refresh.addEventListener('click', () => void this.refreshAll());
    this._user = h('div', { class: `${CLS}-user` });
    this.node.append(
      h(
        'header',
        { class: `${CLS}-header` },
        h('h2', { class: `${CLS}-title` }, 'Containers'),
        refresh
      ),
      this._user,
      this._configs.node,
      this._kernels.node,
      this._jobs.node
    );
    this._configs.show(emptyState('Loading…', 'loading'));
    this._kernels.show(emptyState('Loading…', 'loading'));
    this._jobs.show(emptyState('Loading…', 'loading'));
  }

  /** Reload configurations, kernels and jobs. */
  async refreshAll(): Promise<void> {
    await Promise.all([this.refreshConfigs(), this.refreshKernels(), this.refreshJobs()]);
  }

  async refreshConfigs(): Promise<void> {
    try {
      const list = await requestAPI<IConfigList>('configs');
      this._user.textContent = `${list.user}${
        list.groups.length ? ` (${list.groups.join(', ')})` : ''
      } · ${list.source}`;
      this._user.title = `User, groups and config file`;
      if (!list.configs.length) {
        this._configs.show(emptyState('No execution configuration is open to you.'));
        return;
      }
      this._configs.show(...list.configs.map(c => this._renderConfig(c)));
    } catch (error) {
      this._configs.show(errorState(error));
    }
  }

  async refreshKernels(): Promise<void> {
    if (this._kernelsBusy) {
      return;
    }
    this._kernelsBusy = true;
    try {
      const list = await requestAPI<IKernelList>('kernels');
      deathNotifier.check(list.kernels);
      this._soonIf('kernels', list.kernels.some(k => starting(k.phases)), () => this.refreshKernels());
      pruneLogViews(this._kernelLogs, new Set(list.kernels.map(k => k.id)));
      this._kernels.show(
        ...(list.kernels.length
          ? list.kernels.map(k => this._renderKernel(k))
          : [emptyState('No container kernel is running.')])
      );
    } catch (error) {
      this._kernels.show(errorState(error));
    } finally {
      this._kernelsBusy = false;
    }
  }

  async refreshJobs(): Promise<void> {
    if (this._jobsBusy) {
      return;
    }
    this._jobsBusy = true;
    try {
      const list = await requestAPI<IJobList>('jobs');
      const jobs = [...(list?.jobs ?? [])].reverse(); // newest first
      this._soonIf('jobs', jobs.some(j => starting(j.phases)), () => this.refreshJobs());
      pruneLogViews(this._jobLogs, new Set(jobs.map(j => j.id)));
      this._jobs.show(
        ...(jobs.length ? jobs.map(job => this._renderJob(job)) : [emptyState('No job.')])
      );
    } catch (error) {
      this._jobs.show(errorState(error));
    } finally {
      this._jobsBusy = false;
    }
  }

  dispose(): void {
    this._stopTimer();
    pruneLogViews(this._kernelLogs, new Set());
    pruneLogViews(this._jobLogs, new Set());
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refreshAll();
    this._startTimer();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      void this.refreshAll();
      this._startTimer();
    }
  }

  protected onBeforeHide(msg: Message): void {
    this._stopTimer();
    super.onBeforeHide(msg);
  }

  protected onBeforeDetach(msg: Message): void {
    this._stopTimer();
    super.onBeforeDetach(msg);
  }

  /** Refresh again in a second while a start goes on: its phases are live. */
  private _soonIf(key: string, startsGoOn: boolean, refresh: () => Promise<void>): void {
    if (startsGoOn && !this._soon.has(key)) {
      this._soon.add(key);
      window.setTimeout(() => {
        this._soon.delete(key);
        if (this.isVisible && !document.hidden) {
          void refresh();
        }
      }, 1000);
    }
  }

  private _soon = new Set<string>();

  private _startTimer(): void {
    if (this._timer === null) {
      this._timer = window.setInterval(() => {
        if (this.isVisible && !document.hidden) {
          void this.refreshKernels();
          void this.refreshJobs();
        }
      }, REFRESH_INTERVAL);
    }
  }

  private _stopTimer(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _renderConfig(config: IConfig): HTMLElement {
    const preferred = `dss-${config.name}`;
    const specs = config.kernel_specs.length ? config.kernel_specs : [preferred];
    const defaultSpec = specs.includes(preferred) ? preferred : specs[0];

    let picker: HTMLSelectElement | null = null;
    if (specs.length > 1) {
      picker = h('select', {
        class: `${CLS}-kernel-spec jp-mod-styled`,
        title: 'Kernel for the new notebook'
      }) as HTMLSelectElement;
      for (const spec of specs) {
        const option = h('option', { value: spec }, spec) as HTMLOptionElement;
        option.selected = spec === defaultSpec;
        picker.append(option);
      }
    }
    const button = h(
      'button',
      {
        class: `${CLS}-new-notebook jp-mod-styled jp-mod-accept`,
        type: 'button',
        'data-config': config.name,
        title: `Open a new notebook whose kernel runs in a ${config.name} container`
      },
      'New notebook'
    ) as HTMLButtonElement;
    button.addEventListener('click', () => {
      const kernelName = picker ? picker.value : defaultSpec;
      void this._newNotebook(kernelName, button);
    });

    const envs = config.code_envs.length
      ? h(
          'div',
          { class: `${CLS}-envs` },
          ...config.code_envs.map(env =>
            h(
              'span',
              { class: `${CLS}-env`, 'data-env': env.name, title: env.description || env.name },
              env.name
            )
          )
        )
      : null;

    const test = h(
      'button',
      {
        class: `${CLS}-test jp-mod-styled`,
        type: 'button',
        'data-config': config.name,
        title: `Check that ${config.target} answers`
      },
      'Test'
    ) as HTMLButtonElement;
    const testResult = h('div', { class: `${CLS}-test-result`, 'data-config': config.name });
    test.addEventListener('click', () => void this._testConfig(config.name, test, testResult));

    return h(
      'div',
      { class: `${CLS}-config ${CLS}-card`, 'data-config': config.name },
      h(
        'div',
        { class: `${CLS}-row` },
        h('span', { class: `${CLS}-name` }, config.name),
        h('span', { class: `${CLS}-badge`, 'data-backend': config.backend }, config.backend)
      ),
      config.description ? h('div', { class: `${CLS}-description` }, config.description) : null,
      h('div', { class: `${CLS}-meta ${CLS}-image`, title: 'Image' }, config.image),
      h(
        'div',
        { class: `${CLS}-meta ${CLS}-resources`, title: 'Resources of each kernel' },
        config.resources.summary
      ),
      h('div', { class: `${CLS}-meta ${CLS}-target`, title: 'Where it runs' }, config.target),
      envs,
      h('div', { class: `${CLS}-actions` }, test, picker, button),
      testResult,
      h('div', { class: `${CLS}-action-error` })
    );
  }

  private _renderKernel(kernel: IKernel): HTMLElement {
    const details: string[] = [];
    if (kernel.started) {
      const started = Date.parse(kernel.started);
      if (!Number.isNaN(started)) {
        details.push(`up ${formatDuration((Date.now() - started) / 1000)}`);
      }
    }
    if (kernel.cpu_percent !== null) {
      details.push(`CPU ${kernel.cpu_percent.toFixed(1)} %`);
    }
    if (kernel.memory_bytes !== null) {
      details.push(
        `mem ${formatBytes(kernel.memory_bytes)}` +
          (kernel.memory_limit ? ` / ${formatBytes(kernel.memory_limit)}` : '')
      );
    }
    let memoryBar: HTMLElement | null = null;
    if (kernel.memory_bytes !== null && kernel.memory_limit) {
      const percent = Math.min(100, (100 * kernel.memory_bytes) / kernel.memory_limit);
      memoryBar = h(
        'div',
        { class: `${CLS}-meter`, title: `${percent.toFixed(0)} % of the memory limit` },
        h('div', { class: `${CLS}-meter-fill`, style: `width: ${percent.toFixed(1)}%` })
      );
    }

    const stop = h(
      'button',
      {
        class: `${CLS}-stop jp-mod-styled jp-mod-warn`,
        type: 'button',
        'data-kernel-id': kernel.id,
        title: 'Shut the kernel down and remove its container'
      },
      'Stop'
    ) as HTMLButtonElement;
    const row = h(
      'div',
      {
        class: `${CLS}-kernel ${CLS}-card`,
        'data-kernel-id': kernel.id,
        'data-config': kernel.execution_config,
        'data-state': kernel.state
      },
      h(
        'div',
        { class: `${CLS}-row` },
        h('span', { class: `${CLS}-name`, title: kernel.id }, kernel.name),
        h('span', { class: `${CLS}-state`, 'data-state': kernel.state }, kernel.state),
        kernel.execution_state
          ? h('span', { class: `${CLS}-execution-state` }, kernel.execution_state)
          : null
      ),
      h(
        'div',
        { class: `${CLS}-meta` },
        `${kernel.execution_config}${kernel.code_env ? ` · ${kernel.code_env}` : ''}` +
          (kernel.image ? ` · ${kernel.image}` : '')
      ),
      kernel.phase
        ? h(
            'div',
            { class: `${CLS}-meta ${CLS}-phase`, 'data-phase': kernel.phase },
            `${kernel.phase}${kernel.message ? `: ${kernel.message}` : ''}`
          )
        : null,
      kernel.host
        ? h(
            'div',
            { class: `${CLS}-meta ${CLS}-host`, title: kernel.placement ?? '' },
            `on ${kernel.host}`
          )
        : null,
      details.length ? h('div', { class: `${CLS}-stats` }, details.join(' · ')) : null,
      memoryBar,
      renderPhases(kernel.phases),
      kernel.exit_reason ? h('div', { class: `${CLS}-exit-reason` }, kernel.exit_reason) : null,
      kernel.error ? h('div', { class: `${CLS}-error` }, kernel.error) : null,
      h('div', { class: `${CLS}-actions` }, this._logsButton(kernel.id, 'kernel'), stop),
      h('div', { class: `${CLS}-action-error` })
    );
    stop.addEventListener('click', () => void this._stopKernel(kernel.id, stop, row));
    const logs = this._kernelLogs.get(kernel.id);
    if (logs) {
      row.append(logs.node);
    }
    return row;
  }

  private _renderJob(job: IJob): HTMLElement {
    const now = Date.now() / 1000;
    const times: string[] = [];
    if (job.started) {
      times.push(`started ${new Date(job.started * 1000).toLocaleTimeString()}`);
      const end = job.finished ?? now;
      times.push(`${job.finished ? 'ran' : 'up'} ${formatDuration(end - job.started)}`);
    } else {
      times.push(`submitted ${new Date(job.created * 1000).toLocaleTimeString()}`);
    }
    if (job.exit_code !== null && job.exit_code !== undefined) {
      times.push(`exit ${job.exit_code}`);
    }
    const live = !FINAL_JOB_STATES.includes(job.state);
    let cancel: HTMLButtonElement | null = null;
    if (live) {
      cancel = h(
        'button',
        {
          class: `${CLS}-cancel jp-mod-styled jp-mod-warn`,
          type: 'button',
          'data-job-id': job.id,
          title: 'Cancel the job and remove its container'
        },
        'Cancel'
      ) as HTMLButtonElement;
    }
    const row = h(
      'div',
      {
        class: `${CLS}-job ${CLS}-card`,
        'data-job-id': job.id,
        'data-state': job.state,
        'data-config': job.config
      },
      h(
        'div',
        { class: `${CLS}-row` },
        h('span', { class: `${CLS}-name`, title: job.id }, job.name || job.kind),
        h('span', { class: `${CLS}-state`, 'data-state': job.state }, job.state)
      ),
      h(
        'div',
        { class: `${CLS}-meta` },
        `${job.config}${job.code_env ? ` · ${job.code_env}` : ''} · ${job.id}`
      ),
      h('div', { class: `${CLS}-stats` }, times.join(' · ')),
      renderPhases(job.phases),
      job.message && live ? h('div', { class: `${CLS}-meta` }, job.message) : null,
      job.error ? h('div', { class: `${CLS}-error`, title: job.traceback ?? '' }, job.error) : null,
      h('div', { class: `${CLS}-actions` }, this._logsButton(job.id, 'job'), cancel),
      h('div', { class: `${CLS}-action-error` })
    );
    if (cancel) {
      const button = cancel;
      button.addEventListener('click', () => void this._cancelJob(job.id, button, row));
    }
    const logs = this._jobLogs.get(job.id);
    if (logs) {
      row.append(logs.node);
    }
    return row;
  }

  /** "Logs" / "Hide logs": opens a box under the row that follows the logs while open. */
  private _logsButton(id: string, kind: 'kernel' | 'job'): HTMLButtonElement {
    const views = kind === 'kernel' ? this._kernelLogs : this._jobLogs;
    const button = h(
      'button',
      {
        class: `${CLS}-show-logs jp-mod-styled`,
        type: 'button',
        [`data-${kind}-id`]: id,
        'aria-expanded': String(views.has(id)),
        title: `Show the ${kind}'s output`
      },
      views.has(id) ? 'Hide logs' : 'Logs'
    ) as HTMLButtonElement;
    button.addEventListener('click', () => {
      const open = views.get(id);
      if (open) {
        open.dispose();
        views.delete(id);
      } else {
        const active = () => this.isVisible;
        // A job whose output says it moved on (running, finished) gets its row redrawn now.
        const onState = (state: string) => {
          const row = this._jobs.body.querySelector<HTMLElement>(
            `.${CLS}-job[data-job-id="${CSS.escape(id)}"]`
          );
          if (row && row.dataset.state !== state) {
            void this.refreshJobs();
          }
        };
        const view =
          kind === 'kernel'
            ? LogView.forKernel(id, active)
            : LogView.forJob(id, active, onState);
        views.set(id, view);
        button.closest(`.${CLS}-card`)?.append(view.node);
      }
      button.textContent = views.has(id) ? 'Hide logs' : 'Logs';
      button.setAttribute('aria-expanded', String(views.has(id)));
    });
    return button;
  }

  private async _testConfig(
    name: string,
    button: HTMLButtonElement,
    result: HTMLElement
  ): Promise<void> {
    button.disabled = true;
    button.textContent = 'Testing…';
    result.removeAttribute('data-ok');
    result.replaceChildren();
    try {
      const reply = await requestAPI<ITestResult>(`configs/${encodeURIComponent(name)}/test`, {
        method: 'POST',
        body: '{}'
      });
      result.dataset.ok = String(reply.ok);
      const seconds = `${reply.elapsed_seconds.toFixed(2)} s`;
      result.textContent = reply.ok
        ? `ok · ${[reply.engine, reply.version].filter(Boolean).join(' ')} · ${seconds}`
        : `${reply.error ?? 'failed'} (${seconds})`;
      result.title = reply.target;
    } catch (error) {
      result.dataset.ok = 'false';
      result.replaceChildren(errorState(error));
    } finally {
      button.disabled = false;
      button.textContent = 'Test';
    }
  }

  private async _cancelJob(id: string, button: HTMLButtonElement, row: HTMLElement): Promise<void> {
    button.disabled = true;
    button.textContent = 'Cancelling…';
    row.dataset.stopping = 'true';
    try {
      await requestAPI<IJob>(`jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (error) {
      button.disabled = false;
      button.textContent = 'Cancel';
      delete row.dataset.stopping;
      row.querySelector(`.${CLS}-action-error`)?.replaceChildren(errorState(error));
      return;
    }
    await this.refreshJobs();
  }

  private async _newNotebook(kernelName: string, button: HTMLButtonElement): Promise<void> {
    const card = button.closest(`.${CLS}-card`);
    const errorBox = card?.querySelector(`.${CLS}-action-error`);
    button.disabled = true;
    try {
      errorBox?.replaceChildren();
      // A name the server's kernel picker does not list would open a "Select Kernel"
      // dialog instead: say why up front.
      const specs = this._services.kernelspecs;
      await specs.ready;
      if (specs.specs && !(kernelName in specs.specs.kernelspecs)) {
        await specs.refreshSpecs();
      }
      if (specs.specs && !(kernelName in specs.specs.kernelspecs)) {
        throw new Error(
          `The server lists no kernel named ${kernelName}: is ` +
            'ServerApp.kernel_spec_manager_class set to ' +
            'jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager?'
        );
      }
      await this._commands.execute('notebook:create-new', { kernelName });
      window.setTimeout(() => void this.refreshKernels(), 1500);
    } catch (error) {
      errorBox?.replaceChildren(errorState(error));
    } finally {
      button.disabled = false;
    }
  }

  private async _stopKernel(id: string, button: HTMLButtonElement, row: HTMLElement): Promise<void> {
    button.disabled = true;
    button.textContent = 'Stopping…';
    row.dataset.stopping = 'true';
    try {
      // Through the kernel manager, so open notebooks learn their kernel is gone.
      await this._services.kernels.shutdown(id);
    } catch (error) {
      button.disabled = false;
      button.textContent = 'Stop';
      delete row.dataset.stopping;
      row.querySelector(`.${CLS}-action-error`)?.replaceChildren(errorState(error));
      return;
    }
    await this.refreshKernels();
  }

  private _commands: CommandRegistry;
  private _services: ServiceManager.IManager;
  private _user: HTMLElement;
  private _configs = new Section('configs', 'Execution configurations');
  private _kernels = new Section('kernels', 'Container kernels');
  private _jobs = new Section('jobs', 'Jobs');
  private _timer: number | null = null;
  private _kernelsBusy = false;
  private _jobsBusy = false;
  private _kernelLogs = new Map<string, LogView>();
  private _jobLogs = new Map<string, LogView>();
}

/** Close the log boxes of kernels or jobs that are no longer listed. */
function pruneLogViews(views: Map<string, LogView>, keep: Set<string>): void {
  for (const [id, view] of views) {
    if (!keep.has(id)) {
      view.dispose();
      views.delete(id);
    }
  }
}
