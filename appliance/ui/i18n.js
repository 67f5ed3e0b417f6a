// French and English. The browser's language picks the default; the choice
// is remembered per browser.

export const LANGS = [['en', 'English'], ['fr', 'Français']];

const en = {
  call: 'Call', call_start: 'Start a call', call_join: 'Join', call_join_title: 'Join the call', call_in_progress: 'Call in progress',
  call_already: 'You are already in a call: leave it first.', call_full: 'This call is full.', camera: 'Camera', microphone: 'Microphone',
  speaker: 'Speaker', call_no_camera: 'No camera available: joining with sound only.', call_no_devices: 'No microphone or camera: you can listen and watch.',
  call_declined: 'Call declined.', call_muted_by: '{name} muted your microphone.', call_removed_by: '{name} removed you from the call.',
  call_incoming: '{name} is calling', call_is_calling: 'is calling you', call_accept: 'Accept', call_decline: 'Decline',
  call_layout: 'Grid or speaker layout', call_minimize: 'Shrink or enlarge', call_fullscreen: 'Full screen', call_mic: 'Microphone on/off',
  call_cam: 'Camera on/off', call_share: 'Share your screen', call_hand: 'Raise your hand', call_audio_only: 'Audio only (no video)',
  call_devices: 'Devices', call_leave: 'Leave', call_reconnecting: 'Reconnecting… (the call goes on)', call_n: '{n} in the call',
  call_you: '(you)', call_screen_of: 'Screen of {name}', call_your_screen: 'Your screen', call_muted: 'Muted', call_hand_up: 'Hand raised',
  call_away: 'Reconnecting', call_mute_them: 'Mute', call_remove_them: 'Remove from the call', call_enable_sound: 'Enable sound',
  call_started_by: '{name} started a call', call_missed: 'Missed call from {name}', call_was_declined: 'Call declined',
  call_ended_summary: 'Call ended · {duration} · {names}', duration_min: '{m} min {s} s', duration_sec: '{s} s',
  add_member: 'Add someone', archive: 'Archive room', archived: 'archived', archived_hint: 'This room is archived: read only.',
  back: 'Back to rooms', banner_offline: 'You are offline.', banner_reconnecting: 'Connection lost — reconnecting…',
  banner_pending: '{n} message(s) will be sent when the connection returns.', browse_rooms: 'Browse open rooms', cancel: 'Cancel',
  change_password: 'Change password', close: 'Close', company: 'Company name', confirm_delete: 'Delete this message for everyone?',
  confirm_leave: 'Leave “{room}”?', conn_connecting: 'Connecting…', conn_connected: 'Connected', conn_reconnecting: 'Reconnecting…',
  conn_offline: 'Offline', copied: 'Copied', copy: 'Copy', create: 'Create', create_invite: 'Create link', create_user: 'Create an account',
  current_password: 'Current password', delete: 'Delete', direct_messages: 'Direct messages', disable: 'Disable', disabled: 'disabled',
  display_name: 'Display name', earlier_message: 'an earlier message', edit: 'Edit', edited: '(edited)', editing: 'Editing your message',
  enable: 'Enable', find_person: 'Find a person', go_login: 'Go to the login page', invite: 'Invitation',
  invite_expires: 'Single use, expires {when}.', invite_intro: 'Choose how you will appear and your password.',
  invite_join: 'Join', invite_link: 'Invite link', invite_title: 'Join {company} on Parvis', join: 'Join', language: 'Language',
  leave_room: 'Leave room', load_older: 'Load older messages', loading: 'Loading…',
  logged_out_remote: 'You were signed out (account disabled or password reset).', login: 'Log in', login_to: 'Log in to {company}',
  logout: 'Log out', make_admin: 'Administrator', members: 'Members', members_n: 'Members ({n})', message_actions: 'Message actions',
  message_deleted: 'Message deleted', messages: 'Messages', more_reactions: 'More reactions', n_members: '{n} members',
  n_new_messages: '{n} new message(s) ↓', new_direct: 'New direct message', new_messages: 'New messages', new_password: 'New password',
  new_room: 'New room', no_messages: 'No messages yet. Say hello!', no_open_rooms: 'No other open rooms.', no_results: 'Nothing found.',
  no_room: 'No conversation', no_room_hint: 'Create a room or start a direct message.', not_now: 'Not now', notifications: 'Notifications',
  notify_all: 'All messages', notify_mentions: 'Mentions and direct messages', notify_off: 'Off',
  notify_ask: 'Get a desktop notification when a message arrives?', notify_enable: 'Enable notifications',
  notify_permission_granted: 'This browser allows notifications.', notify_permission_denied: 'This browser blocks notifications (change it in the site settings).',
  notify_permission_default: 'Notifications are not enabled in this browser yet.', notify_permission_unsupported: 'This browser has no notifications.',
  owner: 'owner', password: 'Password', password_again: 'Password again', password_hint: 'At least 8 characters.',
  passwords_differ: 'The two passwords differ.', people: 'People', preferences: 'Preferences', profile: 'Profile',
  react_with: 'React with {emoji}', remove: 'Remove', remove_x: 'Remove {name}', reply: 'Reply', replying_to: 'Replying to {name}',
  reset_password: 'Reset password', reset_password_prompt: 'New password for {name} (at least 8 characters):', retry: 'Retry',
  role: 'Role', role_admin: 'Administrator', role_user: 'Member', room: 'Room', room_name: 'Room name', room_settings: 'Room settings',
  rooms: 'Rooms', save: 'Save', saved: 'Saved', search: 'Search', search_placeholder: 'Search messages', search_results: 'Results for “{q}”',
  send: 'Send', send_failed: 'Not sent', sending: 'Sending…', server_unreachable: 'The Parvis server cannot be reached.',
  settings: 'Settings', setup_code: 'Setup code', setup_code_hint: 'Shown on the box’s screen and in its log at first start.',
  setup_finish: 'Set up Parvis', setup_intro: 'Welcome! Claim this box for your company and create the administrator account.',
  setup_title: 'First start', topic: 'Topic', typing_one: '{names} is typing…', typing_many: '{names} are typing…',
  unarchive: 'Unarchive room', unknown_user: 'Someone', unread_n: '{n} unread', username: 'Username',
  username_hint: '2–32 characters: a-z, 0-9, “.”, “_”, “-”.', visibility: 'Who can join', visibility_invite: 'Invited people only',
  visibility_open: 'Everyone in the company', write_message: 'Write a message', write_message_in: 'Message {room}',
  hours_24: '1 day', hours_72: '3 days', hours_168: '7 days',
  err_bad_credentials: 'Wrong username or password.', err_rate_limited: 'Too many attempts — wait a moment and try again.',
  err_not_member: 'You are not a member of this room.', err_archived: 'This room is archived.', err_csrf: 'Your session expired: reload the page.',
  err_network: 'The server cannot be reached.', err_already_setup: 'This box is already set up.', err_too_large: 'Message too long (16 KiB at most).',
  err_internal: 'Server error; it will be retried.', err_unauthorized: 'Please log in again.',
  err_call_full: 'This call is full.', err_not_in_call: 'You are not in this call.',
};

const fr = {
  call: 'Appel', call_start: 'Lancer un appel', call_join: 'Rejoindre', call_join_title: 'Rejoindre l’appel', call_in_progress: 'Appel en cours',
  call_already: 'Vous êtes déjà dans un appel : quittez-le d’abord.', call_full: 'Cet appel est complet.', camera: 'Caméra', microphone: 'Micro',
  speaker: 'Haut-parleur', call_no_camera: 'Pas de caméra disponible : vous rejoignez avec le son seulement.', call_no_devices: 'Ni micro ni caméra : vous pouvez écouter et regarder.',
  call_declined: 'Appel refusé.', call_muted_by: '{name} a coupé votre micro.', call_removed_by: '{name} vous a retiré de l’appel.',
  call_incoming: '{name} vous appelle', call_is_calling: 'vous appelle', call_accept: 'Accepter', call_decline: 'Refuser',
  call_layout: 'Disposition grille ou orateur', call_minimize: 'Réduire ou agrandir', call_fullscreen: 'Plein écran', call_mic: 'Micro activé/coupé',
  call_cam: 'Caméra activée/coupée', call_share: 'Partager votre écran', call_hand: 'Lever la main', call_audio_only: 'Audio seulement (sans vidéo)',
  call_devices: 'Périphériques', call_leave: 'Quitter', call_reconnecting: 'Reconnexion… (l’appel continue)', call_n: '{n} dans l’appel',
  call_you: '(vous)', call_screen_of: 'Écran de {name}', call_your_screen: 'Votre écran', call_muted: 'Micro coupé', call_hand_up: 'Main levée',
  call_away: 'Reconnexion', call_mute_them: 'Couper le micro', call_remove_them: 'Retirer de l’appel', call_enable_sound: 'Activer le son',
  call_started_by: '{name} a lancé un appel', call_missed: 'Appel manqué de {name}', call_was_declined: 'Appel refusé',
  call_ended_summary: 'Appel terminé · {duration} · {names}', duration_min: '{m} min {s} s', duration_sec: '{s} s',
  add_member: 'Ajouter quelqu’un', archive: 'Archiver le salon', archived: 'archivé', archived_hint: 'Ce salon est archivé : lecture seule.',
  back: 'Retour aux salons', banner_offline: 'Vous êtes hors ligne.', banner_reconnecting: 'Connexion perdue — reconnexion…',
  banner_pending: '{n} message(s) partiront au retour de la connexion.', browse_rooms: 'Parcourir les salons ouverts', cancel: 'Annuler',
  change_password: 'Changer de mot de passe', close: 'Fermer', company: 'Nom de l’entreprise', confirm_delete: 'Supprimer ce message pour tout le monde ?',
  confirm_leave: 'Quitter « {room} » ?', conn_connecting: 'Connexion…', conn_connected: 'Connecté', conn_reconnecting: 'Reconnexion…',
  conn_offline: 'Hors ligne', copied: 'Copié', copy: 'Copier', create: 'Créer', create_invite: 'Créer le lien', create_user: 'Créer un compte',
  current_password: 'Mot de passe actuel', delete: 'Supprimer', direct_messages: 'Messages directs', disable: 'Désactiver', disabled: 'désactivé',
  display_name: 'Nom affiché', earlier_message: 'un message plus ancien', edit: 'Modifier', edited: '(modifié)', editing: 'Modification de votre message',
  enable: 'Réactiver', find_person: 'Chercher une personne', go_login: 'Aller à la connexion', invite: 'Invitation',
  invite_expires: 'Usage unique, expire le {when}.', invite_intro: 'Choisissez votre nom affiché et votre mot de passe.',
  invite_join: 'Rejoindre', invite_link: 'Lien d’invitation', invite_title: 'Rejoindre {company} sur Parvis', join: 'Rejoindre', language: 'Langue',
  leave_room: 'Quitter le salon', load_older: 'Charger les messages précédents', loading: 'Chargement…',
  logged_out_remote: 'Vous avez été déconnecté (compte désactivé ou mot de passe réinitialisé).', login: 'Se connecter', login_to: 'Connexion à {company}',
  logout: 'Se déconnecter', make_admin: 'Administrateur', members: 'Membres', members_n: 'Membres ({n})', message_actions: 'Actions sur le message',
  message_deleted: 'Message supprimé', messages: 'Messages', more_reactions: 'Plus de réactions', n_members: '{n} membres',
  n_new_messages: '{n} nouveau(x) message(s) ↓', new_direct: 'Nouveau message direct', new_messages: 'Nouveaux messages', new_password: 'Nouveau mot de passe',
  new_room: 'Nouveau salon', no_messages: 'Aucun message pour l’instant. Dites bonjour !', no_open_rooms: 'Aucun autre salon ouvert.', no_results: 'Aucun résultat.',
  no_room: 'Aucune conversation', no_room_hint: 'Créez un salon ou commencez un message direct.', not_now: 'Plus tard', notifications: 'Notifications',
  notify_all: 'Tous les messages', notify_mentions: 'Mentions et messages directs', notify_off: 'Désactivées',
  notify_ask: 'Recevoir une notification quand un message arrive ?', notify_enable: 'Activer les notifications',
  notify_permission_granted: 'Ce navigateur autorise les notifications.', notify_permission_denied: 'Ce navigateur bloque les notifications (voir les paramètres du site).',
  notify_permission_default: 'Les notifications ne sont pas encore activées dans ce navigateur.', notify_permission_unsupported: 'Ce navigateur n’a pas de notifications.',
  owner: 'propriétaire', password: 'Mot de passe', password_again: 'Confirmer le mot de passe', password_hint: 'Au moins 8 caractères.',
  passwords_differ: 'Les deux mots de passe diffèrent.', people: 'Personnes', preferences: 'Préférences', profile: 'Profil',
  react_with: 'Réagir avec {emoji}', remove: 'Retirer', remove_x: 'Retirer {name}', reply: 'Répondre', replying_to: 'Réponse à {name}',
  reset_password: 'Réinitialiser le mot de passe', reset_password_prompt: 'Nouveau mot de passe pour {name} (au moins 8 caractères) :', retry: 'Réessayer',
  role: 'Rôle', role_admin: 'Administrateur', role_user: 'Membre', room: 'Salon', room_name: 'Nom du salon', room_settings: 'Paramètres du salon',
  rooms: 'Salons', save: 'Enregistrer', saved: 'Enregistré', search: 'Rechercher', search_placeholder: 'Rechercher dans les messages', search_results: 'Résultats pour « {q} »',
  send: 'Envoyer', send_failed: 'Non envoyé', sending: 'Envoi…', server_unreachable: 'Le serveur Parvis est injoignable.',
  settings: 'Paramètres', setup_code: 'Code d’installation', setup_code_hint: 'Affiché sur l’écran du boîtier et dans son journal au premier démarrage.',
  setup_finish: 'Installer Parvis', setup_intro: 'Bienvenue ! Attribuez ce boîtier à votre entreprise et créez le compte administrateur.',
  setup_title: 'Premier démarrage', topic: 'Sujet', typing_one: '{names} écrit…', typing_many: '{names} écrivent…',
  unarchive: 'Désarchiver le salon', unknown_user: 'Quelqu’un', unread_n: '{n} non lus', username: 'Identifiant',
  username_hint: '2 à 32 caractères : a-z, 0-9, « . », « _ », « - ».', visibility: 'Qui peut rejoindre', visibility_invite: 'Sur invitation uniquement',
  visibility_open: 'Toute l’entreprise', write_message: 'Écrire un message', write_message_in: 'Message dans {room}',
  hours_24: '1 jour', hours_72: '3 jours', hours_168: '7 jours',
  err_bad_credentials: 'Identifiant ou mot de passe incorrect.', err_rate_limited: 'Trop de tentatives — patientez un instant.',
  err_not_member: 'Vous n’êtes pas membre de ce salon.', err_archived: 'Ce salon est archivé.', err_csrf: 'Votre session a expiré : rechargez la page.',
  err_network: 'Le serveur est injoignable.', err_already_setup: 'Ce boîtier est déjà installé.', err_too_large: 'Message trop long (16 Kio au maximum).',
  err_internal: 'Erreur du serveur ; nouvel essai automatique.', err_unauthorized: 'Veuillez vous reconnecter.',
  err_call_full: 'Cet appel est complet.', err_not_in_call: 'Vous n’êtes pas dans cet appel.',
};

const DICTS = { en, fr };

function detect() {
  const saved = localStorage.getItem('parvis.lang');
  if (saved && DICTS[saved]) return saved;
  for (const l of navigator.languages || [navigator.language || 'en']) {
    const base = l.slice(0, 2).toLowerCase();
    if (DICTS[base]) return base;
  }
  return 'en';
}

let current = detect();

export function lang() { return current; }

export function setLang(code) {
  if (!DICTS[code]) return;
  current = code;
  localStorage.setItem('parvis.lang', code);
  document.documentElement.lang = code;
}

/** Looks a key up in the current language (English as fallback). */
export function t(key, vars = {}) {
  const s = DICTS[current][key] ?? en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? `{${k}}`));
}
