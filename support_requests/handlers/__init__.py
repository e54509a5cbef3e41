"""HTTP side: the app factory, auth, validation, problems and one module per tag."""

from support_requests.framework.import_warnings import ignore_connexion_import_warnings

ignore_connexion_import_warnings()
